"""Stage 5, results: fold result lines into rows, usage and cost; check them against what was submitted."""
