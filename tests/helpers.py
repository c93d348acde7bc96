"""Small builders shared by the tests."""

from __future__ import annotations

from pathlib import Path

from policies.types import Request, Sequence

SHARED = Path(__file__).resolve().parents[2] / "shared"


def make_seq(request_id: int, prompt: int, output: int, arrival_s: float = 0.0) -> Sequence:
    return Sequence(Request(request_id, arrival_s, prompt, output))


class FixedCostExecutor:
    """An executor whose iterations all take `step_s`, for pinning scheduler decisions."""

    def __init__(self, step_s: float = 1.0) -> None:
        self.step_s = step_s
        self.plans = []

    def execute(self, plan):
        from policies.types import StepResult

        self.plans.append([(c.seq.seq_id, c.num_new_tokens) for c in plan.chunks])
        return StepResult(self.step_s)


def drive(engine, requests, max_steps: int = 100_000) -> float:
    """A minimal clock loop (no SimPy): submit arrivals as time passes, step until done."""
    pending = sorted(requests, key=lambda r: r.arrival_time_s)
    now, i = 0.0, 0
    for _ in range(max_steps):
        while i < len(pending) and pending[i].arrival_time_s <= now:
            engine.submit(pending[i], now)
            i += 1
        outcome = engine.step(now)
        if outcome.duration_s is not None:
            now += outcome.duration_s
            continue
        candidates = [t for t in (outcome.wake_at_s,) if t is not None]
        if i < len(pending):
            candidates.append(pending[i].arrival_time_s)
        if not candidates:
            return now
        now = max(now, min(candidates))
    raise AssertionError("did not finish")
