"""Stage 3, submit: create each batch once (or adopt it), keep the submission record, pace by the queue."""
