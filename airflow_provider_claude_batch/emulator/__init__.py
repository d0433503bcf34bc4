"""A local emulator of the Claude Message Batches API, for DAG development and tests without a key.

Start it with `python -m airflow_provider_claude_batch.emulator --port 8765`, or in-process with
`EmulatorServer`; point a `claude_batch` connection's host at it (API key `emulator-key` by default).
"""

from airflow_provider_claude_batch.emulator.control import EmulatorControl
from airflow_provider_claude_batch.emulator.server import EmulatorServer
from airflow_provider_claude_batch.emulator.store import EmulatorConfig

__all__ = ["EmulatorConfig", "EmulatorControl", "EmulatorServer"]
