"""Send requests to the Messages API, at most `concurrency` in flight, each answer recorded as it comes.

The I/O shell of the sync route (its decisions are `sync.decide`'s). Each answer is written at once as
one small file under the round's ``messages/`` folder (the output's staging area for this route) before
the next request is taken, so a retry or clear of the task finds what was answered and never sends it
again. Runs in the worker, on threads: never in the triggerer's event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec

from airflow_provider_claude_batch.requests.cache_blocks import first_breakpoint_key
from airflow_provider_claude_batch.storage import read_bytes_if_exists, write_atomically
from airflow_provider_claude_batch.sync.decide import (
    SYNC_BUDGET_EXHAUSTED,
    Pending,
    PrefixLeads,
    SyncBudget,
    error_type_for,
    errored_line,
    retry_delay,
    retry_status,
    shared_prefixes,
    succeeded_line,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow.sdk import ObjectStoragePath

    from airflow_provider_claude_batch.hooks.claude_batch import ClaudeBatchHook

log = logging.getLogger(__name__)
ANSWER_SUFFIX = ".json"
# The key, the workspace or a proxy refused the call: every other call would be refused too (a 404 is
# the request's own problem here, e.g. an unknown model, and lands as its row).
REFUSED_CALLS = frozenset({401, 403, 407})


class _Item(msgspec.Struct):
    custom_id: str
    params: msgspec.Raw


_item_decoder = msgspec.json.Decoder(_Item)
_line_decoder = msgspec.json.Decoder(dict[str, Any])


def request_params(item: bytes) -> tuple[str, bytes]:
    """The custom_id and params bytes of one prepared request (``{"custom_id", "params"}``)."""
    decoded = _item_decoder.decode(item)
    return decoded.custom_id, bytes(decoded.params)


def recorded_answers(folder: ObjectStoragePath) -> dict[str, bytes]:
    """The answers an earlier try recorded (custom_id -> result line); a half-written one is left out."""
    answers: dict[str, bytes] = {}
    if not folder.exists():
        return answers
    for path in folder.iterdir():
        if not path.name.endswith(ANSWER_SUFFIX):
            continue
        data = read_bytes_if_exists(path)
        try:
            line = _line_decoder.decode(data) if data else None
        except msgspec.DecodeError:
            line = None
        if line is not None and line.get("custom_id") == path.name[: -len(ANSWER_SUFFIX)]:
            answers[line["custom_id"]] = data.rstrip(b"\n") + b"\n"  # type: ignore[union-attr]
    return answers


@dataclass
class SyncSender:
    """One sync round's sending: `requests` ``(custom_id, params)`` in, a result line per request out.

    `cost_of` prices an answer line at the standard price (None: unpriced). Calls stop being retried
    once `stop_retrying_at` (epoch) has passed; `max_attempts` bounds the retries of one request.
    """

    hook: ClaudeBatchHook
    folder: ObjectStoragePath
    concurrency: int
    budget: SyncBudget
    cost_of: Callable[[bytes], float | None]
    stop_retrying_at: float | None = None
    max_attempts: int = 5
    sleep: Callable[[float], None] = time.sleep
    sent: int = 0  # requests sent (and answered or failed) by this try
    _lock: threading.Condition = field(default_factory=threading.Condition, repr=False)

    def send(self, requests: Sequence[tuple[str, bytes]]) -> dict[str, bytes]:
        """Every request's result line: recorded ones re-used, the rest sent (or refused by the budget)."""
        lines = recorded_answers(self.folder)
        for line in lines.values():
            self.budget.add(self.cost_of(line))
        todo = [(cid, params, first_breakpoint_key(params)) for cid, params in requests if cid not in lines]
        if len(lines):
            log.info("%d requests were answered by the Messages API in an earlier try: not sent again", len(lines))
        if todo:
            log.info(
                "Sending %d requests to the Messages API (standard price), %d at a time", len(todo), self.concurrency
            )
        shared = shared_prefixes(todo)
        if shared:
            log.info(
                "%d cached prefixes are shared by several of them: the first request of each goes alone, the "
                "others read what it wrote (sent together, each would pay to write it)",
                shared,
            )
        pending = PrefixLeads(deque(todo))
        failure: list[BaseException] = []
        workers = [
            threading.Thread(target=self._work, args=(pending, lines, failure), name=f"claude-sync-{n}", daemon=True)
            for n in range(min(self.concurrency, len(todo)))
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        if failure:
            raise failure[0]
        left = pending.left()
        for custom_id, _, _ in left:  # left by the budget: reported, not recorded (a higher cap sends them)
            lines[custom_id] = errored_line(
                custom_id,
                SYNC_BUDGET_EXHAUSTED,
                f"not sent: max_sync_cost_usd={self.budget.cap} would be passed (spent ${self.budget.spent:.4f})",
            )
        if left:
            log.warning(
                "max_sync_cost_usd=%s reached after $%.4f: %d requests not sent (failed with %s)",
                self.budget.cap,
                self.budget.spent,
                len(left),
                SYNC_BUDGET_EXHAUSTED,
            )
        return lines

    def _work(self, pending: PrefixLeads, lines: dict[str, bytes], failure: list[BaseException]) -> None:
        while True:
            with self._lock:
                while True:
                    if failure or not pending:
                        return
                    step = self.budget.next_step()
                    if step == "stop":
                        return
                    request: Pending | None = pending.take() if step == "send" else None
                    if request is not None:  # (None: every request left waits for its prefix's first answer)
                        self.budget.started()
                        break
                    self._lock.wait()
            custom_id, params, _ = request
            cost: float | None = None
            try:
                line, wrote = self._call(custom_id, params)
                write_atomically(self.folder / f"{custom_id}{ANSWER_SUFFIX}", line)
                cost = self.cost_of(line)
            except BaseException as exc:  # a worker that dies takes the whole round down, recorded answers kept
                with self._lock:
                    failure.append(exc)
                    self.budget.settle(None)
                    pending.answered(request, wrote=False)
                    self._lock.notify_all()
                return
            with self._lock:
                lines[custom_id] = line
                self.sent += 1
                self.budget.settle(cost)
                pending.answered(request, wrote=wrote)
                self._lock.notify_all()

    def _call(self, custom_id: str, params: bytes) -> tuple[bytes, bool]:
        """One request's result line, and whether it was answered with a message: retried only on answers
        that say it was not processed.
        """
        import anthropic

        from airflow_provider_claude_batch.hooks.api_errors import retry_after

        attempt = 1
        while True:
            try:
                message = self.hook.create_message(params, custom_id=custom_id)
            except anthropic.APIStatusError as exc:
                status = exc.status_code
                if status in REFUSED_CALLS:
                    raise  # the key or workspace is wrong: every other call would be refused too
                if retry_status(status) and attempt < self.max_attempts and not self._too_late():
                    delay = retry_delay(retry_after(exc), attempt)
                    log.warning("Messages call for %s answered %s; sending again in %.1f s", custom_id, status, delay)
                    self.sleep(delay)
                    attempt += 1
                    continue
                body_type, text = _error_of(exc.body, str(exc))
                return errored_line(custom_id, error_type_for(status, body_type), text), False
            except anthropic.APIConnectionError as exc:
                # No answer: the call may have been processed (and billed), so it is not sent again.
                lost = f"no answer from the Messages API ({type(exc).__name__})"
                return errored_line(custom_id, error_type_for(None, None), lost), False
            return succeeded_line(custom_id, message), True

    def _too_late(self) -> bool:
        return self.stop_retrying_at is not None and time.time() >= self.stop_retrying_at


def _error_of(body: object, fallback: str) -> tuple[str | None, str]:
    """The error type and message of an API error body (``{"type": "error", "error": {...}}``)."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return inner.get("type") or None, str(inner.get("message") or fallback)
    return None, fallback
