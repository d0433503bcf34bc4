"""Stage 2, requests: the request schema (the one rule set), encoding, fingerprints and batch planning."""
