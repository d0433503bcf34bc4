"""Which JSONL lines are sent as written: the block checks, pure."""

from __future__ import annotations

import json

import msgspec
import pytest

from airflow_provider_claude_batch.requests import schema as as_written
from tests.helpers import message_params


def test_object_lines_finds_every_newline_of_a_block_of_one_object_per_line() -> None:
    assert as_written.object_lines(b'{"a":1}\n{"b":2}\n{}') == [7, 15]
    assert as_written.object_lines(b'{"a":1}') == []


@pytest.mark.parametrize(
    "part",
    [
        b'{"a":1}\n\n{"b":2}',  # a blank line
        b'{"a":1}\n \n{"b":2}',  # a line of spaces
        b'{"a":1}\r\n{"b":2}',  # a CR: the per-line road keeps it as written
        b' {"a":1}\n{"b":2}',  # spacing before the first line
        b'{"a":1}\n{"b":2} ',  # after the last
        b'{"a":\n{"b":2}}',  # a value over two lines
        b'[{"a":1}]\n{"b":2}',  # not an object
        b"",
    ],
)
def test_object_lines_leaves_doubtful_blocks_to_the_lines(part: bytes) -> None:
    assert as_written.object_lines(part) is None


def test_custom_ids_are_checked_for_their_characters_and_length_by_the_schema() -> None:
    def accepted(custom_ids: list[str]) -> bool:
        lines = b"\n".join(
            json.dumps({"custom_id": custom_id, "params": message_params()}).encode() for custom_id in custom_ids
        )
        try:
            as_written.decoder(False).decode_lines(lines)
        except msgspec.ValidationError:
            return False
        return True

    assert accepted(["a-1", "B_2", "x" * 64])
    assert not accepted(["ok", "caf\u00e9"])
    assert not accepted(["ok", "a b"])
    assert not accepted(["ok", "a\n"])
    assert not accepted(["ok", "x" * 65])
    assert not accepted(["ok", ""])


def test_only_utf_8_is_sent_as_written() -> None:
    assert as_written.valid_utf8(b'{"a":"x"}') and as_written.valid_utf8('{"a":"\u65e5"}'.encode())
    assert not as_written.valid_utf8(b'{"a":"\xff"}')
    assert not as_written.valid_utf8(b'{"a":"\xed\xa0\x80"}')  # an encoded surrogate


@pytest.mark.parametrize("field", as_written.SAMPLING_FIELDS)
def test_any_sampling_sees_each_sampling_field_alone(field: str) -> None:
    decode = as_written.decoder(False).decode

    def params(**extra: object) -> as_written.Params:
        return decode(json.dumps({"custom_id": "a", "params": message_params(**extra)})).params

    assert not as_written.any_sampling([params(), params()])
    assert as_written.any_sampling([params(), params(**{field: 0})])
    assert as_written.sampling_of(params(**{field: 0})) == {field: 0}
