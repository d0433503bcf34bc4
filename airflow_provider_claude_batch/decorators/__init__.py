"""The ``@task.claude_batch`` decorator."""
