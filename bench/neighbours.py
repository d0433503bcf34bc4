"""How busy the rest of the machine was while a figure ran: CPU of processes outside the benchmark.

On a shared machine a ratio measured beside a CPU-heavy neighbour says more about the neighbour than about
the contenders, so the figures that depend on it report this beside their verdict.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

# /proc/stat's cpu line: user nice system idle iowait irq softirq steal ...; busy = all but idle and iowait.
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)


def _busy_seconds() -> float:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return sum(fields[i] for i in _BUSY_FIELDS) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    """CPU of this process and of its children waited for (each contender's process)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of another process (the emulator)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Neighbours:
    """CPU seconds others used (host steal included) and the wall seconds watched, summed over windows."""

    seconds: float = 0.0
    wall: float = 0.0

    def watch(self, pids: tuple[int, ...] = ()) -> _Window:
        """A window to measure in: `with neighbours.watch((emulator_pid,)): ...`."""
        return _Window(self, pids)

    @property
    def share(self) -> float:
        """Others' CPU as a share of all the machine's cores over the watched time."""
        cores = os.cpu_count() or 1
        return self.seconds / (self.wall * cores) if self.wall else 0.0


class _Window:
    def __init__(self, into: Neighbours, pids: tuple[int, ...]) -> None:
        self._into, self._pids = into, pids

    def __enter__(self) -> None:
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds(), sum(map(process_seconds, self._pids)))

    def __exit__(self, *exc: object) -> None:
        wall, busy, own, pids = self._start
        ours = _own_seconds() - own + sum(map(process_seconds, self._pids)) - pids
        self._into.seconds += max(0.0, _busy_seconds() - busy - ours)
        self._into.wall += time.perf_counter() - wall
