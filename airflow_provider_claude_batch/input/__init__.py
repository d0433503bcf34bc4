"""Stage 1, input: read request rows from JSONL or CSV in object storage (or from a task), and render templates."""
