"""The Claude Batch sensor."""
