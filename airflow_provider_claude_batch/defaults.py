"""Limits and defaults, in a module that imports nothing: operator modules need them at DAG parse time."""

DEFAULT_CONN_ID = "claude_batch_default"

# The API's per-batch limits: 100,000 requests or 256 MB; keep a margin under the size limit for
# the proxy in front of the API.
API_MAX_REQUESTS = 100_000
API_MAX_BODY_BYTES = 255_000_000

# Most batches end within an hour; polling more often than this costs rate limit for no news.
DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_MAX_POLL_INTERVAL = 300.0
# How long a run of transient API errors is ridden out while waiting.
DEFAULT_ERROR_BUDGET = 3 * 3600.0
BATCH_LIFETIME = 24 * 3600.0
DEADLINE_MARGIN = 3600.0
# A claim on a store without conditional writes is won after this long without a rival write.
CLAIM_SETTLE_SECONDS = 3.0
