"""Stage 4, wait: the wait tracker (decisions without I/O), polling and listing, and the in-worker loop."""
