"""The text encoding every input file is read in: UTF-8, with a leading byte order mark dropped."""

from __future__ import annotations

from airflow_provider_claude_batch.exceptions import BatchInputError

UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-16 (and UTF-32 LE): neither byte ever starts UTF-8 text


def without_bom(start: bytes, source: object) -> bytes:
    """A file's first bytes without a UTF-8 byte order mark; a UTF-16/32 file is refused by name.

    Excel's "CSV UTF-8" writes the mark, and it is an encoding signature, not data.
    """
    if start.startswith(UTF8_BOM):
        return start[len(UTF8_BOM) :]
    if start.startswith(_WIDE_BOMS):
        raise BatchInputError(
            f"{source} is UTF-16 or UTF-32 text (it starts with that byte order mark); "
            "save it as UTF-8. Nothing was submitted."
        )
    return start
