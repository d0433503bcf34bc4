"""Airflow-facing decorators: `@task.claude_batch`, a function that returns requests, run as one batch task."""
