"""What preflight needs of each kept request, gathered while the request is validated: its input line,
model, max_tokens and sampling fields (the sizes are the buffer's offsets). Pure.

The typed decode that validates a request already holds these, so keeping them costs a few C-level
list and array operations per block of lines, not a second parse of 100,000 requests.
"""

from __future__ import annotations

from array import array
from typing import TYPE_CHECKING

from airflow_provider_claude_batch.requests import schema

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


class RequestFacts:
    """Per kept request, in input order: line number, model (an index into `models`), max_tokens, and
    the sampling fields of the few requests that set any.
    """

    def __init__(self) -> None:
        self.lines: array[int] = array("Q")
        self.max_tokens: array[int] = array("Q")
        self.model_index: array[int] = array("H")
        self.models: list[str] = []  # distinct, in order of first use
        self._model_numbers: dict[str, int] = {}
        self.sampling: dict[int, dict[str, object]] = {}  # request index -> {field: value}

    def __len__(self) -> int:
        return len(self.lines)

    def _number(self, model: str) -> int:
        number = self._model_numbers.get(model)
        if number is None:
            number = self._model_numbers[model] = len(self.models)
            self.models.append(model)
        return number

    def add(self, line: int, params: schema.Params) -> None:
        """One request (the per-line road)."""
        found = schema.sampling_of(params)
        if found is not None:
            self.sampling[len(self.lines)] = found
        self.lines.append(line)
        self.max_tokens.append(params.max_tokens)
        self.model_index.append(self._number(params.model))

    def add_block(self, first_line: int, params: Sequence[schema.Params], *, may_sample: bool) -> None:
        """Consecutive lines from `first_line` (the block road); `may_sample`: the block names a sampling field."""
        start = len(self.lines)
        if may_sample:
            for offset, each in enumerate(params):
                found = schema.sampling_of(each)
                if found is not None:
                    self.sampling[start + offset] = found
        self.lines.extend(range(first_line, first_line + len(params)))
        self.max_tokens.extend([p.max_tokens for p in params])
        number = self._number
        self.model_index.extend([number(p.model) for p in params])

    def model_of(self, index: int) -> str:
        """The model request `index` names."""
        return self.models[self.model_index[index]]

    def subset(self, indexes: Iterable[int]) -> RequestFacts:
        """The facts of these requests (in the order given), as `PreparedRequests.subset` keeps them."""
        chosen = RequestFacts()
        for index in indexes:
            if index in self.sampling:
                chosen.sampling[len(chosen.lines)] = self.sampling[index]
            chosen.lines.append(self.lines[index])
            chosen.max_tokens.append(self.max_tokens[index])
            chosen.model_index.append(chosen._number(self.model_of(index)))
        return chosen
