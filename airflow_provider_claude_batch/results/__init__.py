"""Stage 5, results: fold result lines into rows and usage, price them, plan resubmission rounds."""
