"""Stage 6, output: staged files committed atomically (raw lines, table, failures), the manifest last."""
