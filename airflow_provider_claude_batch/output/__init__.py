"""Output: staged atomic files (tables, raw copies), the manifest, and the fold of resubmission rounds."""
