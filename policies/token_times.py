"""Output-token timestamps, stored once per engine step instead of once per token.

Every token an engine emits is stamped with the end of the step that sampled it, and a step
stamps every sequence of its batch with the same time. So an engine keeps one append-only
`TokenTimeline` of the times its steps stamped, and each sequence's `TokenTimes` holds only
runs of entries of that timeline:

    timeline   [ t0 | t1 | t2 | t3 | t4 | t5 | t6 | ... ]     one float per stamping step
    seq A      runs (1, 3), (5, 2)  ->  t1 t2 t3 t5 t6        (it skipped the step ending t4)
    seq B      runs (4, 3)          ->  t4 t5 t6

A sequence in every step of its life is one run, whatever its length: the times of a
million-request trace take a few hundred MB instead of 8 bytes per token (1.7 GB). The values
read back are the floats stamped, bit for bit, so every metric is unchanged.

Times that are not a step of this engine (a token handed over by another replica, a test's
own values) are stamped like any other: they become entries of the timeline.
"""

from __future__ import annotations

from array import array
from typing import Iterable, Iterator

RUN_TYPECODE = "I"
"""Runs hold unsigned 32-bit (timeline index, token count) pairs: an engine would need more
than 4 billion stamping steps to overflow them, and then `array` raises OverflowError."""


class TokenTimeline:
    """The times an engine stamped tokens with, in stamping order (one entry per step that
    emitted tokens, unless the step's end equals the entry before)."""

    __slots__ = ("times_s",)

    def __init__(self) -> None:
        self.times_s = array("d")

    def __len__(self) -> int:
        return len(self.times_s)

    def stamp(self, time_s: float) -> int:
        """The index of an entry equal to `time_s`: the last one when it is, else a new one."""
        times = self.times_s
        if not times or times[-1] != time_s:
            times.append(time_s)
        return len(times) - 1

    def extend(self, times_s: array) -> int:
        """Append `times_s` (one entry each) and return the index of the first."""
        first = len(self.times_s)
        self.times_s.extend(times_s)
        return first


class TokenTimes:
    """One sequence's output-token times: runs of consecutive entries of a timeline.

    Reads like the array of times it stands for (`len`, indexing, iteration, equality by
    value); engines write through `add_run` / `add_at`, which take timeline indices, while
    `append` / `extend` stamp arbitrary times. A `TokenTimes` made without a timeline gets
    its own at the first write.
    """

    __slots__ = ("timeline", "runs")

    def __init__(self, timeline: TokenTimeline | None = None) -> None:
        self.timeline = timeline
        self.runs = array(RUN_TYPECODE)
        """Flat (first timeline index, token count) pairs, in token order."""

    # ---- writing ----------------------------------------------------------------------
    def add_run(self, timeline: TokenTimeline, first: int, count: int) -> None:
        """`count` tokens stamped with `timeline`'s entries `first`, `first + 1`, ...
        (a run joins the one before when it goes on where that one stopped)."""
        if timeline is not self.timeline:
            self._bind(timeline)
        runs = self.runs
        if runs and runs[-2] + runs[-1] == first:
            runs[-1] += count
        elif count:
            runs.append(first)
            runs.append(count)

    def add_at(self, timeline: TokenTimeline, index: int, count: int = 1) -> None:
        """`count` tokens all stamped with `timeline`'s entry `index` (a speculative verify
        emits several at one step's end: each after the first is a run of its own)."""
        if timeline is not self.timeline:
            self._bind(timeline)
        runs = self.runs
        if runs and runs[-2] + runs[-1] == index:  # the first goes on the last run
            if count:
                runs[-1] += 1
                if count > 1:
                    runs.fromlist([index, 1] * (count - 1))  # faster than extend for an array
        elif count > 0:
            runs.fromlist([index, 1] * count)

    def _bind(self, timeline: TokenTimeline) -> None:
        if self.timeline is not None:
            raise ValueError("a sequence's token times come from one timeline "
                             "(restamped() moves them to another)")
        self.timeline = timeline

    def restamped(self, timeline: TokenTimeline) -> TokenTimes:
        """The same times as runs of `timeline` (a sequence handed to another engine)."""
        moved = TokenTimes(timeline)
        moved.extend(self.values())
        return moved

    def append(self, time_s: float) -> None:
        """One token at `time_s`."""
        timeline = self._own_timeline()
        self.add_at(timeline, timeline.stamp(time_s))

    def extend(self, times_s: Iterable[float]) -> None:
        """One token at each of `times_s`, in order."""
        for time_s in times_s:
            self.append(time_s)

    def _own_timeline(self) -> TokenTimeline:
        if self.timeline is None:
            self.timeline = TokenTimeline()
        return self.timeline

    # ---- reading ----------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(self.runs[1::2])

    def __bool__(self) -> bool:
        return bool(self.runs)

    def __getitem__(self, position: int) -> float:
        """The time of token `position` (negative counts from the end)."""
        runs = self.runs
        if self.timeline is not None and runs:
            times = self.timeline.times_s
            if position == 0:
                return times[runs[0]]
            if position == -1:
                return times[runs[-2] + runs[-1] - 1]
        count = len(self)
        index = position + count if position < 0 else position
        if not 0 <= index < count:
            raise IndexError(f"token {position} of {count}")
        for first, num in zip(runs[::2], runs[1::2]):
            if index < num:
                return self.timeline.times_s[first + index]
            index -= num
        raise AssertionError("unreachable: index checked against the run counts")

    def __iter__(self) -> Iterator[float]:
        return iter(self.values())

    def values(self) -> array:
        """Every token's time, in order, as an array of doubles."""
        out = array("d")
        if self.timeline is not None:
            times = self.timeline.times_s
            runs = self.runs
            for first, count in zip(runs[::2], runs[1::2]):
                out.extend(times[first:first + count])
        return out

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TokenTimes):
            return self.values() == other.values()
        if isinstance(other, (array, list, tuple)):
            return list(self.values()) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        return f"TokenTimes({list(self.values())})"

