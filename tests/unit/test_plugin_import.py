"""The plugin module Airflow loads in every task's process (for macros) does not import the view's app."""

from __future__ import annotations

import subprocess
import sys


def _seen(code: str) -> list[str]:
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [line for line in lines.splitlines() if line.startswith("SEEN ")]  # not Airflow's own log lines


def test_loading_the_plugin_imports_neither_fastapi_nor_the_view() -> None:
    # Airflow 3.0's plugins manager imports FastAPI itself; what loading our plugin adds is what counts.
    (airflows,) = _seen("import sys\nimport airflow.plugins_manager\nprint('SEEN', 'fastapi' in sys.modules)\n")
    code = (
        "import sys\n"
        "from airflow_provider_claude_batch.plugins.claude_batch import ClaudeBatchPlugin\n"
        "plugin = ClaudeBatchPlugin()\n"
        "print('SEEN', 'fastapi' in sys.modules, 'airflow_provider_claude_batch.dashboard.sources' in sys.modules)\n"
        "print('SEEN', plugin.fastapi_apps[0]['url_prefix'], 'fastapi' in sys.modules)\n"
    )
    out = _seen(code)
    assert out[0] == f"{airflows} False"  # a task's process pays for neither (beyond what Airflow imports)
    assert out[1] == "SEEN /claude-batch True"  # the API server gets the app when it reads fastapi_apps
