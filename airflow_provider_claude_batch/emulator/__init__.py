"""A local emulator of the Claude Message Batches API, for DAG development and tests without a key.

Start it with `python -m airflow_provider_claude_batch.emulator --port 8765`, or in-process with
`EmulatorServer`; point a `claude_batch` connection's host at it (API key `emulator-key` by default).
It needs the package's `[emulator]` extra (its ASGI app and server), which a plain install leaves out.
"""

from importlib import import_module

for _name in ("starlette", "uvicorn"):
    try:
        import_module(_name)
    except ImportError as exc:
        raise ImportError(
            f"The Claude Batches emulator needs {_name}, which is not installed: "
            "pip install 'airflow-provider-claude-batch[emulator]'"
        ) from exc

from airflow_provider_claude_batch.emulator.control import EmulatorControl  # noqa: E402
from airflow_provider_claude_batch.emulator.server import EmulatorServer  # noqa: E402
from airflow_provider_claude_batch.emulator.store import EmulatorConfig  # noqa: E402

__all__ = ["EmulatorConfig", "EmulatorControl", "EmulatorServer"]
