"""Airflow-facing hooks: the `claude_batch` connection, the SDK client it builds, and how API errors are classified."""
