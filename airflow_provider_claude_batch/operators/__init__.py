"""The Claude Batch operators and their console links."""
