"""Stage 6, output: staged files committed atomically (tables, raw copies), the manifest last; rounds folded."""
