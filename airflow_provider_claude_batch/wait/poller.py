"""One poller per event loop and connection, shared by every `ClaudeBatchTrigger` waiting there.

A triggerer runs all its triggers in one event loop. Each trigger registers its wait (a `Watch`) with
the poller; polls that fall due close together share one cycle, and a cycle that wants many batches
reads them from the List endpoint (up to 1,000 a page) instead of one retrieve per batch. One SDK
client serves the connection's triggers, built off the event loop by the first and closed by the last.

Every trigger still decides for itself: a cycle hands each trigger's `WaitTracker` its snapshots or
the API error its batches met, and the tracker backs off, retries or gives up as before. The poller
does this in its own task and wakes a trigger's task only to log a line or to end the wait (see
`wait.watch`): between cycles, 10,000 waiting triggers share one timer and none of them is woken.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.hooks.api_errors import describe_api_error
from airflow_provider_claude_batch.hooks.claude_batch import BATCHES_PATH, ClaudeBatchHook
from airflow_provider_claude_batch.wait.errors import classify_status
from airflow_provider_claude_batch.wait.events import BatchSnapshot, snapshot
from airflow_provider_claude_batch.wait.listing import (
    PAGE_LIMIT,
    ListingScan,
    answer_for,
    coalesce_patience,
    decode_page,
    oldest_known,
    page_cap,
    use_listing,
)
from airflow_provider_claude_batch.wait.watch import Watch

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence

    from anthropic import AsyncAnthropic
    from anthropic.types.messages import MessageBatch

    from airflow_provider_claude_batch.wait.listing import ListedBatch
    from airflow_provider_claude_batch.wait.tracker import WaitTracker

log = logging.getLogger(__name__)

# How many retrieves the pollers of one event loop start at once (one triggerer). Building a request
# and reading its answer is a few ms of Python: hundreds started in one turn of the loop would block
# every other trigger for seconds. A retrieve gives its slot back when its answer is in, or after
# SLOW_POLL_SECONDS: a slow or hanging API never holds up the other retrieves for longer than that.
POLL_SLOTS = 32
SLOW_POLL_SECONDS = 5.0
# Work of a cycle per turn of the loop: watches checked or answered (a tracker's step each), snapshots
# made, and triggers woken (each then runs its own step: log lines, the event). 10,000 of any of them
# in one turn would stall every other trigger of the triggerer.
WATCHES_PER_TURN = 500
SNAPSHOTS_PER_TURN = 500
WAKES_PER_TURN = 32
# After the List endpoint refused a cycle (an error that waiting cannot fix, or a page not shaped like
# the API's), the poller retrieves each batch for this long before it lists again.
LISTING_PAUSE_SECONDS = 600.0

_poll_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
_pollers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, SharedPoller]] = weakref.WeakKeyDictionary()


def _slots() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slots = _poll_slots.get(loop)
    if slots is None:
        slots = _poll_slots[loop] = asyncio.Semaphore(POLL_SLOTS)
    return slots


async def _retrieve(client: AsyncAnthropic, batch_id: str) -> MessageBatch:
    async with _slots():
        poll = asyncio.ensure_future(client.messages.batches.retrieve(batch_id))
        try:
            await asyncio.wait({poll}, timeout=SLOW_POLL_SECONDS)
        except BaseException:
            poll.cancel()
            raise
    return await poll


@dataclass
class SharedPoller:
    """The poll cycles and the SDK client of one connection in one event loop."""

    conn_id: str
    users: int = 0  # triggers holding the client (the last one closes it)
    waiting: int = 0  # those of them that poll batches (their polls may share a cycle)
    _hook: ClaudeBatchHook | None = None
    _client: asyncio.Future[AsyncAnthropic] | None = None
    _gates: deque[asyncio.Future[None]] = field(default_factory=deque)  # triggers waiting for the client
    _watches: dict[Watch, None] = field(default_factory=dict)  # in the order the triggers came
    _timer: asyncio.TimerHandle | None = None
    _cycle: asyncio.Task[None] | None = None
    _created_at: dict[str, float] = field(default_factory=dict)
    # The last listed state of each batch and its snapshot: an unchanged batch keeps its snapshot, so
    # a cycle allocates nothing for the batches that did not move.
    _listed: dict[str, ListedBatch] = field(default_factory=dict)
    _shots: dict[str, BatchSnapshot] = field(default_factory=dict)
    _listing_paused_until: float = 0.0
    cycles: int = 0

    async def client(self) -> AsyncAnthropic:
        """The shared client; the first caller starts building it in a worker thread, the others wait.

        At a triggerer's start thousands of triggers may wait for it: once it is built they go on a
        few per turn of the loop, not all in one (each one's next step registers its wait). A trigger
        cancelled meanwhile leaves the build to the others.
        """
        if self._client is None:
            self._hook = ClaudeBatchHook(claude_batch_conn_id=self.conn_id)
            self._client = asyncio.ensure_future(self._build(self._hook))
            self._client.add_done_callback(self._open_gates)
        if not self._client.done() or self._gates:
            gate = asyncio.get_running_loop().create_future()
            self._gates.append(gate)
            await gate
        return self._client.result()

    def _open_gates(self, _: object = None) -> None:
        for _ in range(min(WAKES_PER_TURN, len(self._gates))):
            gate = self._gates.popleft()
            if not gate.done():
                gate.set_result(None)
        if self._gates:
            asyncio.get_running_loop().call_soon(self._open_gates)

    def describe(self, exc: BaseException) -> str:
        """An API error for a log line or an event, naming the connection's proxy when it failed there."""
        return self._hook.describe_error(exc) if self._hook is not None else describe_api_error(exc)

    @staticmethod
    async def _build(hook: ClaudeBatchHook) -> AsyncAnthropic:
        return (await hook.get_async_conn()).with_options(max_retries=0)

    @contextmanager
    def watch(self, tracker: WaitTracker, *, progress: bool) -> Iterator[Watch]:
        """Register a trigger's wait: its first poll is due now, the next ones when its tracker says.

        The trigger awaits `Watch.news` for the lines to log and the outcome; leaving the `with`
        (its wait is over, or the trigger was cancelled) unregisters it.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        watch = Watch(
            tracker,
            due=now,
            deadline=now + tracker.deadline - time.time(),
            patience=coalesce_patience(tracker.poll_interval),
            progress=progress,
        )
        self._watches[watch] = None
        if self._cycle is None:
            self._start_by(watch.start_by(self.waiting <= 1))
        try:
            yield watch
        finally:
            self._watches.pop(watch, None)

    def _start_by(self, when: float) -> None:
        if self._timer is not None:
            if self._timer.when() <= when:
                return
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_at(when, self._start_cycle)

    def _start_cycle(self) -> None:
        self._timer = None
        if self._watches:
            self._cycle = asyncio.ensure_future(self._run_cycle())
            self._cycle.add_done_callback(self._cycle_done)

    def _cycle_done(self, cycle: asyncio.Task[None]) -> None:
        self._cycle = None
        if not cycle.cancelled() and cycle.exception() is not None:
            log.error("A poll cycle of connection %r failed", self.conn_id, exc_info=cycle.exception())
        alone = self.waiting <= 1
        starts = [w.start_by(alone) for w in self._watches if not w.over]
        if starts:
            self._start_by(min(starts))

    async def _run_cycle(self) -> None:
        import anthropic

        self.cycles += 1
        loop = asyncio.get_running_loop()
        read_at, now = loop.time(), time.time()
        due: list[Watch] = []
        wanted: dict[str, None] = {}
        for count, watch in enumerate(list(self._watches), 1):
            if watch.joins(read_at) and watch.before_poll(now):
                due.append(watch)
                wanted.update(dict.fromkeys(watch.tracker.pending()))
            if count % WATCHES_PER_TURN == 0:
                await asyncio.sleep(0)
        if not due:
            return
        found, errors = await self._read(list(wanted))
        now, woken = time.time(), 0
        described: dict[int, str] = {}  # one failed List call is every watch's error: describe it once
        for count, watch in enumerate(due, 1):
            if watch not in self._watches:
                continue  # its trigger left during the cycle
            answer = answer_for(watch.tracker.pending(), found, errors)
            if isinstance(answer, anthropic.APIStatusError | anthropic.APIConnectionError):
                text = described.get(id(answer)) or described.setdefault(id(answer), self.describe(answer))
                woke = watch.after_error(answer, text, now, loop.time())
            elif isinstance(answer, BaseException):
                woke = watch.fail(answer)
            else:
                woke = watch.after_answer(answer, read_at, now)
            woken += woke
            if count % WATCHES_PER_TURN == 0 or (woke and woken % WAKES_PER_TURN == 0):
                await asyncio.sleep(0)

    async def _read(self, wanted: list[str]) -> tuple[dict[str, BatchSnapshot], dict[str, BaseException]]:
        """Snapshots of the wanted batches, and the error each batch without one met."""
        found: dict[str, BatchSnapshot] = {}
        errors: dict[str, BaseException] = {}
        try:
            client = await self.client()
            if use_listing(len(wanted)) and time.monotonic() >= self._listing_paused_until:
                await self._list(client, wanted, found, errors)
            missing = [b for b in wanted if b not in found and b not in errors]
            polls = await asyncio.gather(*(_retrieve(client, b) for b in missing), return_exceptions=True)
            for batch_id, batch in zip(missing, polls, strict=True):
                if isinstance(batch, BaseException):
                    errors[batch_id] = batch
                else:
                    self._created_at[batch_id] = batch.created_at.timestamp()
                    found[batch_id] = snapshot(batch)
        except Exception as exc:  # no watch may be left without an answer
            errors.update(dict.fromkeys((b for b in wanted if b not in found), exc))
        return found, errors

    async def _list(
        self,
        client: AsyncAnthropic,
        wanted: list[str],
        found: dict[str, BatchSnapshot],
        errors: dict[str, BaseException],
    ) -> None:
        """Fill `found` from the listing; a transient error goes to every batch not found yet.

        An error that waiting cannot fix, or a page that is not shaped like the API's, leaves the
        batches to be retrieved one by one (retrieve is the documented way to poll, so its answer counts).
        """
        import anthropic
        import httpx2
        import msgspec

        scan = ListingScan(
            frozenset(wanted), time.time(), page_cap(len(wanted)), oldest_known(wanted, self._created_at)
        )
        params: dict[str, object] = {"limit": PAGE_LIMIT}
        try:
            while True:
                response = await client.get(BATCHES_PATH, cast_to=httpx2.Response, options={"params": params})
                await asyncio.sleep(0)  # reading the response was one turn of the loop, decoding it is another
                page = decode_page(response.content)
                del response
                if not scan.feed(page):
                    break
                params = {"limit": PAGE_LIMIT, "after_id": page.last_id}
        except anthropic.APIStatusError as exc:
            if classify_status(exc.status_code) == "transient":
                errors.update(dict.fromkeys(scan.missing(), exc))
            else:
                self._refuse_listing(describe_api_error(exc))
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._refuse_listing(f"unexpected page shape ({exc})")
        except anthropic.APIConnectionError as exc:
            errors.update(dict.fromkeys(scan.missing(), exc))
        created_at, listed, shots = self._created_at, self._listed, self._shots
        for count, (batch_id, batch) in enumerate(scan.found.items(), 1):
            if listed.get(batch_id) == batch:
                found[batch_id] = shots[batch_id]
            else:
                created_at[batch_id] = batch.created_at.timestamp()
                listed[batch_id] = batch
                found[batch_id] = shots[batch_id] = batch.snapshot()
            if count % SNAPSHOTS_PER_TURN == 0:
                await asyncio.sleep(0)

    def _refuse_listing(self, reason: str) -> None:
        self._listing_paused_until = time.monotonic() + LISTING_PAUSE_SECONDS
        log.warning(
            "Listing batches on connection %r failed (%s); retrieving each batch instead for %.0f min",
            self.conn_id,
            reason,
            LISTING_PAUSE_SECONDS / 60,
        )

    def forget(self, batch_ids: Sequence[str]) -> None:
        """Drop what the poller remembers of batches no trigger waits on any more."""
        for batch_id in batch_ids:
            self._created_at.pop(batch_id, None)
            self._listed.pop(batch_id, None)
            self._shots.pop(batch_id, None)

    async def aclose(self) -> None:
        """Stop the pending cycle and close the connection's client (when its last trigger leaves)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._cycle is not None:
            self._cycle.cancel()
            with suppress(BaseException):
                await self._cycle
        if self._client is not None and not self._client.done():
            # still being built in a worker thread: let it finish, so its connection pool is closed too
            with suppress(BaseException):
                await self._client
        if self._hook is not None:
            await self._hook.aclose()


@asynccontextmanager
async def shared_poller(conn_id: str, batch_ids: Sequence[str]) -> AsyncIterator[SharedPoller]:
    """The running event loop's poller for `conn_id`; the last trigger to leave closes its client.

    A trigger that polls no batches (the queue trigger) shares the client only.
    """
    pollers = _pollers.setdefault(asyncio.get_running_loop(), {})
    poller = pollers.get(conn_id)
    if poller is None:
        poller = pollers[conn_id] = SharedPoller(conn_id)
    polls = 1 if batch_ids else 0
    poller.users += 1
    poller.waiting += polls
    try:
        yield poller
    finally:
        poller.users -= 1
        poller.waiting -= polls
        poller.forget(batch_ids)
        if poller.users == 0:
            if pollers.get(conn_id) is poller:
                del pollers[conn_id]
            await poller.aclose()
