"""The emulator as the official SDK sees it: real HTTP on 127.0.0.1, sync and async clients."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import anthropic
import httpx2
import pytest
from anthropic.types.messages import MessageBatch

from airflow_provider_claude_batch.emulator import EmulatorControl, EmulatorServer
from tests.helpers import make_requests, message_params


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=emulator.url, api_key=emulator.api_key, max_retries=0) as sdk:
        yield sdk


def _wait_ended(client: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    deadline = time.monotonic() + 10
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended" or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


def test_create_retrieve_and_results_round_trip(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    control.configure(processing_seconds=0.2)
    control.set_outcomes({"match": "req-3", "outcome": "errored", "error_type": "overloaded_error"})
    requests = [*make_requests(5), {"custom_id": "bad-params", "params": message_params(max_tokens=0)}]
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 6
    assert batch.expires_at.timestamp() - batch.created_at.timestamp() == pytest.approx(86400)

    ended = _wait_ended(client, batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 4 and ended.request_counts.errored == 2
    assert ended.ended_at is not None and ended.results_url is not None

    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert set(results) == {r["custom_id"] for r in requests}
    ok = results["req-0"]
    assert ok.type == "succeeded"
    assert ok.message.usage.service_tier == "batch"
    assert ok.message.usage.input_tokens > 0 and ok.message.content[0].type == "text"
    overloaded = results["req-3"]
    assert overloaded.type == "errored" and overloaded.error.error.type == "overloaded_error"
    invalid = results["bad-params"]
    assert invalid.type == "errored" and invalid.error.error.type == "invalid_request_error"


def test_results_order_differs_from_request_order(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    control.configure(processing_seconds=0)
    requests = make_requests(30)
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    order = [r.custom_id for r in client.messages.batches.results(batch.id)]
    assert sorted(order) == sorted(r["custom_id"] for r in requests)
    assert order != [r["custom_id"] for r in requests]


def test_list_paginates_newest_first(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    ids = [client.messages.batches.create(requests=make_requests(1)).id for _ in range(5)]  # type: ignore[arg-type]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2]
    assert page.has_more and page.last_id == ids[3]
    assert [b.id for b in page] == ids[::-1]  # the SDK follows after_id across pages
    assert control.state()["calls"]["list"] == 3  # the first page, then two more


def test_many_batches_made_in_one_control_call_are_batches_like_any_other(
    client: anthropic.Anthropic, control: EmulatorControl
) -> None:
    control.configure(processing_seconds=3600)
    made = client.messages.batches.create(requests=make_requests(1, "one")).id  # type: ignore[arg-type]
    ids = control.create_batches(2_500, make_requests(2))
    assert len(set(ids)) == 2_500 and made not in ids
    listed = [b.id for b in client.messages.batches.list(limit=1000)]
    assert listed == [*ids[::-1], made]  # newest first, after the one made by the API, over three pages
    batch = client.messages.batches.retrieve(ids[7])
    assert (batch.processing_status, batch.request_counts.processing) == ("in_progress", 2)
    state = control.state(custom_ids=False)
    assert state["batches_created"] == 2_501 and state["calls"]["create"] == 1
    with pytest.raises(anthropic.BadRequestError, match="Unknown pagination cursor"):
        client.messages.batches.list(limit=10, after_id="msgbatch_never_made")


def test_cancel_passes_through_canceling(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    control.configure(processing_seconds=60, cancel_seconds=0.3)
    batch = client.messages.batches.create(requests=make_requests(3))  # type: ignore[arg-type]
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    ended = _wait_ended(client, batch.id)
    assert ended.request_counts.canceled == 3
    kinds = {r.result.type for r in client.messages.batches.results(batch.id)}
    assert kinds == {"canceled"}
    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        client.messages.batches.cancel(batch.id)


def test_delete_only_after_the_batch_ended(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    control.configure(processing_seconds=3600)
    batch = client.messages.batches.create(requests=make_requests(1))  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError, match="still processing"):
        client.messages.batches.delete(batch.id)
    control.advance(3601)
    deleted = client.messages.batches.delete(batch.id)
    assert deleted.id == batch.id and deleted.type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def test_clock_jumps_expire_a_batch_and_archive_its_results(
    client: anthropic.Anthropic, control: EmulatorControl
) -> None:
    control.configure(processing_seconds=48 * 3600)
    control.set_outcomes({"match": "req-0", "outcome": "expired"})
    batch = client.messages.batches.create(requests=make_requests(2))  # type: ignore[arg-type]
    control.advance(24 * 3600 + 5)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.expired == 2
    control.advance(29 * 86400)
    archived = client.messages.batches.retrieve(batch.id)
    assert archived.archived_at is not None
    with pytest.raises(anthropic.NotFoundError, match="archived"):
        list(client.messages.batches.results(batch.id))


def test_a_wrong_key_gets_401(emulator: EmulatorServer) -> None:
    with (
        anthropic.Anthropic(base_url=emulator.url, api_key="sk-wrong", max_retries=0) as wrong,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        wrong.messages.batches.list()
    assert caught.value.status_code == 401
    assert caught.value.type == "authentication_error"
    assert caught.value.request_id is not None


def test_the_x_api_key_header_is_accepted_too(emulator: EmulatorServer) -> None:
    response = httpx2.get(
        f"{emulator.url}/v1/messages/batches",
        headers={"x-api-key": emulator.api_key, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200
    missing_version = httpx2.get(f"{emulator.url}/v1/messages/batches", headers={"x-api-key": emulator.api_key})
    assert missing_version.status_code == 400
    assert missing_version.json()["error"]["type"] == "invalid_request_error"


def test_unknown_ids_and_paths_get_404_envelopes(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.batches.retrieve("msgbatch_nope")
    assert caught.value.type == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.cancel("msgbatch_nope")
    raw = httpx2.get(f"{str(client.base_url).rstrip('/')}/v1/nothing-here")
    assert raw.status_code == 404 and raw.json()["type"] == "error"


def test_a_foreign_workspace_header_is_refused(emulator: EmulatorServer) -> None:
    with (
        anthropic.Anthropic(
            base_url=emulator.url,
            api_key=emulator.api_key,
            max_retries=0,
            default_headers={"anthropic-workspace-id": "wrkspc_other"},
        ) as sdk,
        pytest.raises(anthropic.PermissionDeniedError),
    ):
        sdk.messages.batches.list()


def test_create_validation_errors(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    with pytest.raises(anthropic.BadRequestError, match="custom_id"):
        client.messages.batches.create(requests=[{"custom_id": "no spaces!", "params": message_params()}])  # type: ignore[list-item]
    with pytest.raises(anthropic.BadRequestError, match="duplicate"):
        client.messages.batches.create(requests=make_requests(2, "x") + make_requests(1, "x"))  # type: ignore[arg-type]
    control.configure(max_requests=10)
    with pytest.raises(anthropic.BadRequestError, match="at most 10"):
        client.messages.batches.create(requests=make_requests(11))  # type: ignore[arg-type]
    assert control.state()["batches_created"] == 0


def test_a_body_over_the_size_limit_gets_413(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    control.configure(max_body_bytes=50_000)
    with pytest.raises(anthropic.RequestTooLargeError) as caught:
        client.messages.batches.create(requests=make_requests(500))  # type: ignore[arg-type]
    assert caught.value.status_code == 413 and caught.value.type == "request_too_large"
    assert control.state()["batches_created"] == 0


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_status_faults_per_endpoint(
    client: anthropic.Anthropic,
    control: EmulatorControl,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    control.inject({"endpoint": "list", "status": status, "retry_after": 2})
    with pytest.raises(error_class) as caught:
        client.messages.batches.list()
    assert caught.value.type == error_type
    assert caught.value.response.headers.get("retry-after") == "2"
    client.messages.batches.list()  # the fault was used up
    assert control.state()["faults_served"] == {"list": 1}


def test_the_sdk_retries_reads_and_honours_retry_after(emulator: EmulatorServer, control: EmulatorControl) -> None:
    control.inject({"endpoint": "list", "status": 429, "retry_after": 0.3, "count": 2})
    with anthropic.Anthropic(base_url=emulator.url, api_key=emulator.api_key, max_retries=2) as sdk:
        started = time.monotonic()
        sdk.messages.batches.list()
        assert time.monotonic() - started >= 0.55
    assert control.state()["responses"] == {"list 429": 2, "list 200": 1}


def test_spend_cap_429_has_no_retry_after(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    control.inject({"endpoint": "create", "status": 429, "error_code": "enforced_spend_limit_reached"})
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.batches.create(requests=make_requests(1))  # type: ignore[arg-type]
    assert caught.value.error_code == "enforced_spend_limit_reached"
    assert "retry-after" not in caught.value.response.headers


def test_a_lost_create_response_still_made_the_batch(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    control.inject({"endpoint": "create", "kind": "lost_response"})
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.batches.create(requests=make_requests(3))  # type: ignore[arg-type]
    state = control.state()
    assert state["batches_created"] == 1
    assert state["batches"][0]["custom_ids"] == ["req-0", "req-1", "req-2"]


def test_the_sdks_own_retry_of_a_lost_create_pays_twice(emulator: EmulatorServer, control: EmulatorControl) -> None:
    """Why our hook turns SDK retries off for create: the default client makes two batches here."""
    control.inject({"endpoint": "create", "kind": "lost_response"})
    with anthropic.Anthropic(base_url=emulator.url, api_key=emulator.api_key, max_retries=2) as sdk:
        sdk.messages.batches.create(requests=make_requests(3))  # type: ignore[arg-type]
    assert control.state()["batches_created"] == 2


def test_a_create_that_times_out_still_made_the_batch(emulator: EmulatorServer, control: EmulatorControl) -> None:
    control.inject({"endpoint": "create", "kind": "lost_response", "mode": "timeout", "delay_seconds": 1.0})
    with (
        anthropic.Anthropic(base_url=emulator.url, api_key=emulator.api_key, max_retries=0, timeout=0.3) as sdk,
        pytest.raises(anthropic.APITimeoutError),
    ):
        sdk.messages.batches.create(requests=make_requests(2))  # type: ignore[arg-type]
    time.sleep(0.8)
    assert control.state()["batches_created"] == 1


def test_a_results_stream_cut_half_way(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    control.configure(processing_seconds=0)
    batch = client.messages.batches.create(requests=make_requests(40))  # type: ignore[arg-type]
    control.inject({"endpoint": "results", "kind": "cut_stream", "after_lines": 20})
    seen: list[str] = []

    def read_all() -> None:
        seen.extend(result.custom_id for result in client.messages.batches.results(batch.id))

    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)):
        read_all()
    assert 0 < len(seen) <= 20
    assert len(list(client.messages.batches.results(batch.id))) == 40  # the next download is whole


def test_a_two_hour_outage_on_the_emulator_clock(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    batch = client.messages.batches.create(requests=make_requests(1))  # type: ignore[arg-type]
    control.inject({"endpoint": "retrieve", "status": 529, "for_seconds": 7200})
    for _ in range(3):
        with pytest.raises(anthropic.OverloadedError):
            client.messages.batches.retrieve(batch.id)
    control.advance(7201)
    assert client.messages.batches.retrieve(batch.id).processing_status == "ended"


def test_a_delay_fault_slows_an_answer(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    control.inject({"endpoint": "list", "kind": "delay", "delay_seconds": 0.4})
    started = time.monotonic()
    client.messages.batches.list()
    assert time.monotonic() - started >= 0.35


def test_malformed_control_requests_are_refused(control: EmulatorControl) -> None:
    import urllib.error

    with pytest.raises(urllib.error.HTTPError):
        control.inject({"endpoint": "nowhere", "status": 500})
    with pytest.raises(urllib.error.HTTPError):
        control.set_outcomes({"match": ".*", "outcome": "maybe"})
    with pytest.raises(urllib.error.HTTPError):
        control.configure(colour="red")


async def test_the_async_client_covers_every_endpoint(emulator: EmulatorServer, control: EmulatorControl) -> None:
    control.configure(processing_seconds=0.1)
    async with anthropic.AsyncAnthropic(base_url=emulator.url, api_key=emulator.api_key, max_retries=0) as sdk:
        batch = await sdk.messages.batches.create(requests=make_requests(4))  # type: ignore[arg-type]
        other = await sdk.messages.batches.create(requests=make_requests(2, "other"))  # type: ignore[arg-type]
        assert (await sdk.messages.batches.cancel(other.id)).processing_status in ("canceling", "ended")
        listed = [b.id async for b in sdk.messages.batches.list(limit=1)]
        assert listed == [other.id, batch.id]
        import asyncio

        await asyncio.sleep(0.2)
        ended = await sdk.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended"
        ids = [r.custom_id async for r in await sdk.messages.batches.results(batch.id)]
        assert sorted(ids) == sorted(f"req-{i}" for i in range(4))
        assert (await sdk.messages.batches.delete(batch.id)).id == batch.id
        control.inject({"endpoint": "retrieve", "status": 529})
        with pytest.raises(anthropic.OverloadedError):
            await sdk.messages.batches.retrieve(other.id)
        with pytest.raises(anthropic.NotFoundError):
            await sdk.messages.batches.retrieve(batch.id)


def test_inspection_counts_calls_and_lists_custom_ids(client: anthropic.Anthropic, control: EmulatorControl) -> None:
    batch = client.messages.batches.create(requests=make_requests(2))  # type: ignore[arg-type]
    client.messages.batches.retrieve(batch.id)
    client.messages.batches.cancel(batch.id)
    state = control.state()
    assert state["calls"] == {"create": 1, "retrieve": 1, "cancel": 1}
    assert state["batches"][0]["cancel_calls"] == 1
    assert state["batches"][0]["custom_ids"] == ["req-0", "req-1"]
    assert "custom_ids" not in control.state(custom_ids=False)["batches"][0]
    json.dumps(state)
