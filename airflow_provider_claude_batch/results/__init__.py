"""Results: fold result lines into rows, usage and cost; check them against what was submitted; rounds."""
