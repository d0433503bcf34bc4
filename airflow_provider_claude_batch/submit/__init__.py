"""The submit stage: the submission record and its stores, create-once-and-adopt, queue pacing."""
