"""What preflight needs of each kept request, gathered while the request is validated: its input line,
model, max_tokens and sampling fields (the sizes are the buffer's offsets). Pure.

The typed decode that validates a request already holds these, so keeping them costs a few C-level
list and array operations per block of lines, not a second parse of 100,000 requests. They are columns
(requests/columns.py) that spill with the items: nothing per request stays in memory for a large input.
"""

from __future__ import annotations

from itertools import compress, repeat
from typing import TYPE_CHECKING

import msgspec

from airflow_provider_claude_batch.requests import schema
from airflow_provider_claude_batch.requests.columns import IntColumn

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence


class RequestFacts:
    """Per kept request, in input order: line number, model (an index into `models`), max_tokens, and
    which sampling fields it sets (an index into `samplings`, 0 for none: the same few combinations recur).
    """

    def __init__(self) -> None:
        self.lines = IntColumn("Q")
        self.max_tokens = IntColumn("L")
        self.model_index = IntColumn("H")
        self.sampling_index = IntColumn("L")
        self.models: list[str] = []  # distinct, in order of first use
        self._model_numbers: dict[str, int] = {}
        self.samplings: list[dict[str, object]] = [{}]  # distinct sampling fields; 0: none set
        self._sampling_numbers: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self.lines)

    def columns(self) -> tuple[IntColumn, ...]:
        """The per-request columns (spilled with the items)."""
        return (self.lines, self.max_tokens, self.model_index, self.sampling_index)

    def _number(self, model: str) -> int:
        number = self._model_numbers.get(model)
        if number is None:
            number = self._model_numbers[model] = len(self.models)
            self.models.append(model)
        return number

    def _sampling_number(self, found: dict[str, object] | None) -> int:
        if not found:
            return 0
        key = msgspec.json.encode(found, order="sorted")
        number = self._sampling_numbers.get(key)
        if number is None:
            number = self._sampling_numbers[key] = len(self.samplings)
            self.samplings.append(found)
        return number

    def add(self, line: int, params: schema.Params) -> None:
        """One request (the per-line road)."""
        self.sampling_index.append(self._sampling_number(schema.sampling_of(params)))
        self.lines.append(line)
        self.max_tokens.append(params.max_tokens)
        self.model_index.append(self._number(params.model))

    def add_block(self, first_line: int, params: Sequence[schema.Params]) -> None:
        """Consecutive lines from `first_line` (the block road)."""
        if schema.any_sampling(params):
            self.sampling_index.extend([self._sampling_number(schema.sampling_of(each)) for each in params])
        else:
            self.sampling_index.extend(repeat(0, len(params)))
        self.lines.extend(range(first_line, first_line + len(params)))
        self.max_tokens.extend([p.max_tokens for p in params])
        models = [p.model for p in params]
        if models and models.count(models[0]) == len(models):  # the usual block: one model (counted in C)
            self.model_index.extend(repeat(self._number(models[0]), len(models)))
        else:
            number = self._number
            self.model_index.extend([number(model) for model in models])

    def model_of(self, index: int) -> str:
        """The model request `index` names."""
        return self.models[self.model_index[index]]

    def sampled(self) -> Iterator[tuple[int, dict[str, object]]]:
        """(request index, its sampling fields) of each request that sets any, in order."""
        if len(self.samplings) == 1:
            return
        base = 0
        for chunk in self.sampling_index.chunks():
            for offset in compress(range(len(chunk)), chunk):
                yield base + offset, self.samplings[chunk[offset]]
            base += len(chunk)

    @property
    def sampling(self) -> dict[int, dict[str, object]]:
        """The sampling fields of each request that sets any, by request index."""
        return dict(self.sampled())

    def subset(self, indexes: Iterable[int]) -> RequestFacts:
        """The facts of these requests (in the order given), as `PreparedRequests.subset` keeps them."""
        chosen = RequestFacts()
        for index in indexes:
            chosen.sampling_index.append(chosen._sampling_number(self.samplings[self.sampling_index[index]]))
            chosen.lines.append(self.lines[index])
            chosen.max_tokens.append(self.max_tokens[index])
            chosen.model_index.append(chosen._number(self.model_of(index)))
        return chosen
