"""Content identity of single tokens, in runs, for token-granular prefix matching (`radix`).

A token's key says what it is, at the same three levels as `block_hashes.py`:

    prompt with known ids         key = the token id                     (an "id run")
    prompt under Mooncake hash_ids key = (("trace", block_id), offset)    (a "named run")
    rest of the prompt             key = (("own", request_id), position)  (a "named run")
    outputs                        key = (("out", request_id, sample), position)

"rest of the prompt" is the prompt of a length-only trace or the part past its hash ids;
outputs are private to their sample because the simulator does not know output ids. Private
keys only the request (sample) itself hits again, after a recompute preemption. Two paths in a radix
tree hold equal KV when their key sequences are equal, since a token's KV depends on the
whole prefix and the path from the root is that prefix.

Keys are never materialised per token (a Mooncake prompt has 15k tokens): a `KeyRun` names a
stretch of consecutive keys, so a whole prompt is one id run, or one named run per trace block
plus one private run. Comparing two named runs is O(1); two id runs compare their id slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

from policies.types import Request


@dataclass(frozen=True, slots=True)
class KeyRun:
    """Keys of `stop - start` consecutive tokens.

    With `ids` set, token i of the run has key `ids[start + i]`; otherwise `(stream, start + i)`.
    """

    stream: Hashable
    start: int
    stop: int
    ids: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return self.stop - self.start

    def first_key(self, skip: int = 0) -> Hashable:
        """Key of the run's token `skip` (what a tree node's children are indexed by)."""
        if self.ids is not None:
            return self.ids[self.start + skip]
        return (self.stream, self.start + skip)

    def sliced(self, lo: int, hi: int) -> KeyRun:
        """Tokens `lo..hi-1` of this run, as a run."""
        return KeyRun(self.stream, self.start + lo, self.start + hi, self.ids)


def common_length(a: KeyRun, a_skip: int, b: KeyRun, b_skip: int) -> int:
    """How many keys `a[a_skip:]` and `b[b_skip:]` share from their starts."""
    limit = min(len(a) - a_skip, len(b) - b_skip)
    a_lo, b_lo = a.start + a_skip, b.start + b_skip
    if a.ids is None or b.ids is None:
        same = a.ids is None and b.ids is None and a.stream == b.stream and a_lo == b_lo
        return limit if same else 0
    if a.ids is b.ids and a_lo == b_lo:
        return limit
    left, right = a.ids[a_lo:a_lo + limit], b.ids[b_lo:b_lo + limit]
    if left == right:
        return limit
    return next(i for i, (x, y) in enumerate(zip(left, right)) if x != y)


def append_run(runs: list[KeyRun], run: KeyRun) -> None:
    """Append `run` to `runs`, merging it into the last run when it continues it."""
    if runs:
        last = runs[-1]
        if last.stream == run.stream and last.ids is run.ids and last.stop == run.start:
            runs[-1] = KeyRun(last.stream, last.start, run.stop, last.ids)
            return
    runs.append(run)


def split_runs(runs: list[KeyRun], num_tokens: int) -> tuple[list[KeyRun], list[KeyRun]]:
    """The first `num_tokens` keys of `runs` and the rest."""
    head: list[KeyRun] = []
    for index, run in enumerate(runs):
        if num_tokens >= len(run):
            head.append(run)
            num_tokens -= len(run)
            continue
        tail = runs[index + 1:]
        if num_tokens:
            head.append(run.sliced(0, num_tokens))
            tail.insert(0, run.sliced(num_tokens, len(run)))
        else:
            tail.insert(0, run)
        return head, tail
    return head, []


def drop_tail_runs(runs: list[KeyRun], num_tokens: int) -> None:
    """Remove the last `num_tokens` keys of `runs`, in place."""
    while num_tokens:
        run = runs.pop()
        if len(run) > num_tokens:
            runs.append(run.sliced(0, len(run) - num_tokens))
            return
        num_tokens -= len(run)


def token_key_runs(request: Request, lo: int, hi: int, sample_index: int = 0) -> list[KeyRun]:
    """Keys of `request`'s tokens at positions `lo..hi-1` (prompt, then the outputs of sample
    `sample_index`: parallel samples share the prompt, never each other's outputs)."""
    runs: list[KeyRun] = []
    prompt_end = min(hi, request.prompt_tokens)
    if lo < prompt_end and request.prompt_token_ids is not None:
        runs.append(KeyRun("ids", lo, prompt_end, request.prompt_token_ids))
        lo = prompt_end
    trace_ids, trace_size = request.prefix_block_hashes, request.prefix_block_tokens
    if lo < prompt_end and trace_ids and trace_size:
        traced_end = min(prompt_end, len(trace_ids) * trace_size)
        while lo < traced_end:
            block, offset = divmod(lo, trace_size)
            stop = min(traced_end, (block + 1) * trace_size)
            runs.append(KeyRun(("trace", trace_ids[block]), offset, offset + stop - lo))
            lo = stop
    if lo < prompt_end:
        runs.append(KeyRun(("own", request.request_id), lo, prompt_end))
        lo = prompt_end
    if lo < hi:
        runs.append(KeyRun(_output_stream(request, sample_index), lo, hi))
    return runs


def extend_key_runs(runs: list[KeyRun], request: Request, lo: int, hi: int,
                    sample_index: int = 0) -> None:
    """Append the keys of `request`'s positions `lo..hi-1` to `runs` (keys ending at `lo`),
    joining the last run where they continue it: outputs growing a decode's own path, the
    common case, take one new run and no list."""
    if runs and lo >= request.prompt_tokens:
        last = runs[-1]
        stream = _output_stream(request, sample_index)
        if last.stop == lo and last.ids is None and last.stream == stream:
            runs[-1] = KeyRun(stream, last.start, hi)
            return
    for run in token_key_runs(request, lo, hi, sample_index):
        append_run(runs, run)


def _output_stream(request: Request, sample_index: int) -> tuple:
    return ("out", request.request_id, sample_index)
