"""Provider metadata read by Airflow's ProvidersManager (entry point `apache_airflow_provider`).

The connection form is declared here (`conn-fields`), so the UI builds it without importing the
hook, and so without importing the SDK.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_claude_batch import __version__

PACKAGE = "airflow_provider_claude_batch"

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port"],
    "relabeling": {"password": "API Key", "host": "Base URL"},
    "placeholders": {
        "password": "sk-ant-...",
        "host": "https://api.anthropic.com (leave empty), or http://127.0.0.1:8765 for the emulator",
    },
}

CONN_FIELDS: dict[str, Any] = {
    "workspace_id": {
        "label": "Workspace ID",
        "schema": {"type": ["string", "null"]},
        "description": "wrkspc_... Only needed when the key can act in more than one workspace. "
        "Create, poll and results must use the same workspace.",
    },
    "timeout": {
        "label": "Timeout (seconds)",
        "schema": {"type": ["number", "null"], "minimum": 1, "default": 120},
        "description": "Per-request timeout. Waiting for a batch is done by polling, so this only "
        "bounds one API call (a 256 MB create upload needs a generous value).",
    },
    "max_retries": {
        "label": "Max retries",
        "schema": {"type": ["integer", "null"], "minimum": 0, "default": 2},
        "description": "SDK retries for reads (retrieve, list, results). Create is never retried "
        "blindly: a lost answer is reconciled by looking the batch up instead.",
    },
    "beta_headers": {
        "label": "Beta headers",
        "schema": {"type": ["string", "null"]},
        "description": "Comma-separated anthropic-beta values, e.g. output-300k-2026-03-24.",
    },
    "proxy": {
        "label": "Proxy URL",
        "schema": {"type": ["string", "null"]},
        "description": "HTTP(S) proxy for API calls, e.g. http://proxy.internal:3128.",
    },
    "api_version": {
        "label": "API version",
        "schema": {"type": ["string", "null"], "enum": [None, "2023-06-01", "2026-10-21"]},
        "description": "Pin the anthropic-version header; empty uses the SDK's default.",
    },
}


def get_provider_info() -> dict[str, Any]:
    """The provider's metadata (connection type, hook, extra links) that Airflow reads from the entry point."""
    return {
        "package-name": "airflow-provider-claude-batch",
        "name": "Claude Message Batches",
        "description": "Submit, wait for and land Claude Message Batches: half-price, asynchronous "
        "Claude requests, made safe for retries, clears and backfills.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Claude Message Batches",
                "external-doc-url": "https://platform.claude.com/docs/en/build-with-claude/batch-processing",
                "tags": ["ai"],
            }
        ],
        "hooks": [{"integration-name": "Claude Message Batches", "python-modules": [f"{PACKAGE}.hooks.claude_batch"]}],
        "operators": [
            {"integration-name": "Claude Message Batches", "python-modules": [f"{PACKAGE}.operators.claude_batch"]}
        ],
        "sensors": [
            {"integration-name": "Claude Message Batches", "python-modules": [f"{PACKAGE}.sensors.claude_batch"]}
        ],
        "triggers": [
            {"integration-name": "Claude Message Batches", "python-modules": [f"{PACKAGE}.triggers.claude_batch"]}
        ],
        "extra-links": [f"{PACKAGE}.operators.links.ClaudeConsoleBatchLink"],
        "plugins": [{"name": "claude_batch", "plugin-class": f"{PACKAGE}.plugins.claude_batch.ClaudeBatchPlugin"}],
        "task-decorators": [
            {"name": "claude_batch", "class-name": f"{PACKAGE}.decorators.claude_batch.claude_batch_task"}
        ],
        "config": {
            "claude_batch": {
                "description": "Settings of the Claude Message Batches provider.",
                "options": {
                    "state_path": {
                        "description": "Where submission records are kept (object storage every worker "
                        "shares, e.g. s3://bucket/claude-batch-state); unset: Airflow's task "
                        "state store (3.3+), else the local disk, refused on a non-local "
                        "executor. They make retries, clears and backfill re-runs re-attach "
                        "instead of paying twice.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://bucket/claude-batch-state",
                        "default": None,
                    },
                    "console_batch_url": {
                        "description": "URL template of one batch in the Claude Console ({batch_id}).",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": None,
                        # A template: Airflow must not expand {batch_id} (3.0 raises KeyError on it).
                        "is_template": True,
                        "default": "https://platform.claude.com/workspaces/default/batches/{batch_id}",
                    },
                    "dashboard_conn_ids": {
                        "description": "Claude connections the Claude Batches view lists besides those of "
                        "type claude_batch in the metadata database (e.g. ones from a secrets backend), "
                        "comma-separated.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "claude_batch_default,claude_batch_eu",
                        "default": "",
                    },
                    "dashboard_cache_seconds": {
                        "description": "How long the Claude Batches view re-uses a connection's List page.",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": None,
                        "default": "30",
                    },
                    "dashboard_api_timeout": {
                        "description": "How long the Claude Batches view waits for the List endpoint before "
                        "it shows what it has and says the API was unreachable (seconds).",
                        "version_added": "0.1.0",
                        "type": "float",
                        "example": None,
                        "default": "5",
                    },
                },
            }
        },
        "connection-types": [
            {
                "hook-class-name": f"{PACKAGE}.hooks.claude_batch.ClaudeBatchHook",
                "hook-name": "Claude Message Batches",
                "connection-type": "claude_batch",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
            }
        ],
    }
