"""Airflow discovers the provider, its hook and the connection form, without importing the SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from importlib.metadata import entry_points
from pathlib import Path

import jsonschema
import pytest

from airflow_provider_claude_batch.get_provider_info import get_provider_info
from tests.helpers import AIRFLOW_VERSION


def test_the_entry_point_returns_valid_provider_info() -> None:
    ours = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_provider_claude")]
    (entry,) = ours
    info = entry.load()()
    assert info == get_provider_info()
    schema = json.loads((resources.files("airflow") / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)


@pytest.mark.filterwarnings("ignore:ProvidersManager.hooks is deprecated")
def test_providers_manager_sees_the_hook_and_the_form() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-claude-batch" in manager.providers
    hook = manager.hooks["claude_batch"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_claude_batch.hooks.claude_batch.ClaudeBatchHook"
    assert hook.connection_id_attribute_name == "claude_batch_conn_id"


@pytest.mark.skipif(
    AIRFLOW_VERSION < (3, 1),
    reason="Airflow 3.0 reads a hook's form fields and relabeling only "
    "when WTForms imports (3.0 does not install it); 3.1 reads the provider info's conn-fields. "
    "On 3.0 the extras go in the connection's Extra JSON.",
)
@pytest.mark.filterwarnings("ignore:ProvidersManager.hooks is deprecated")
def test_the_connection_form_has_the_extra_fields_and_labels() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = manager.connection_form_widgets
    for field in ("workspace_id", "timeout", "max_retries", "beta_headers", "proxy"):
        assert f"extra__claude_batch__{field}" in widgets, field
    behaviour = manager.field_behaviours["claude_batch"]
    assert behaviour["relabeling"] == {"password": "API Key", "host": "Base URL"}


def test_airflow_providers_list_shows_it(tmp_path: Path) -> None:
    airflow = Path(sys.executable).with_name("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    listed = subprocess.run(
        [str(airflow), "providers", "list"], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    assert "airflow-provider-claude-batch" in listed.stdout
    hooks = subprocess.run(
        [str(airflow), "providers", "hooks"], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    assert "claude_batch" in hooks.stdout and "ClaudeBatchHook" in hooks.stdout


def test_the_claude_batches_view_plugin_is_registered_by_installing_the_provider(tmp_path: Path) -> None:
    import importlib

    (declared,) = get_provider_info()["plugins"]
    module, _, name = declared["plugin-class"].rpartition(".")
    plugin = getattr(importlib.import_module(module), name)
    assert plugin.name == declared["name"] == "claude_batch"
    airflow = Path(sys.executable).with_name("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    listed = subprocess.run(
        [str(airflow), "plugins", "--output", "json"], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    table = next(line for line in listed.stdout.splitlines() if line.startswith("[{"))  # after any log lines
    (ours,) = [p for p in json.loads(table) if p["name"] == "claude_batch"]
    assert "airflow-provider-claude-batch" in ours["source"]  # from the entry point: nothing to configure
    assert [(a["url_prefix"], a["name"]) for a in ours["fastapi_apps"]] == [("/claude-batch", "Claude Batches")]
    if AIRFLOW_VERSION >= (3, 1):  # the navigation entry; 3.0 has none (the view is reached by its URL)
        assert [(v["href"], v["destination"]) for v in ours["external_views"]] == [("/claude-batch/", "nav")]
    assert "No module named" not in listed.stderr
