"""Extra links from a task to its batches in the Claude Console, one per batch (first few)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

BATCH_IDS_XCOM_KEY = "batch_ids"
# The Console page of one batch; override with [claude_batch] console_batch_url if yours differs.
DEFAULT_CONSOLE_BATCH_URL = "https://platform.claude.com/workspaces/default/batches/{batch_id}"
LINKED_BATCHES = 4


@attrs.define()
class ClaudeConsoleBatchLink(BaseOperatorLink):
    """Link number `index` (0-based) opens the index-th batch the task submitted or waits on."""

    index: int = 0

    @property
    def name(self) -> str:
        """The link's label in the task's extra links."""
        return "Claude Console" if self.index == 0 else f"Claude Console (batch {self.index + 1})"

    @property
    def xcom_key(self) -> str:
        """Where Airflow caches this link's URL for the task instance."""
        return f"_link_claude_console_batch_{self.index}"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The Console URL of the index-th batch the task published, or '' before it exists."""
        from airflow_provider_claude_batch._compat import conf, xcom_value

        batch_ids: object = xcom_value(ti_key, BATCH_IDS_XCOM_KEY)
        if not isinstance(batch_ids, list) or len(batch_ids) <= self.index:
            return ""
        template = conf.get("claude_batch", "console_batch_url", fallback=DEFAULT_CONSOLE_BATCH_URL)
        return str(template).format(batch_id=batch_ids[self.index])


CONSOLE_LINKS = tuple(ClaudeConsoleBatchLink(index=i) for i in range(LINKED_BATCHES))
