"""The wall-clock loop, on a fake clock: requests are submitted once the clock passes their
arrival, an idle engine sleeps until the next arrival, and the horizon stops the run; a closed
loop sends its requests as earlier ones finish."""

from __future__ import annotations

from backend.runner import run_wall_clock
from policies.engine import Engine
from policies.kv.paged import PagedAllocator, PagedParams
from policies.scheduler.continuous import ContinuousParams, ContinuousScheduler
from policies.types import Request, StepResult
from traces.closed_loop import ClosedLoop, ClosedLoopStage


class FakeTime:
    """A clock that moves only when the executor runs (1 s per step) or the loop sleeps."""

    def __init__(self) -> None:
        self.now_s = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now_s += seconds

    def execute(self, plan) -> StepResult:
        self.now_s += 1.0
        return StepResult(1.0)


def _engine(fake: FakeTime) -> Engine:
    allocator = PagedAllocator(PagedParams(block_size=4, num_blocks=64))
    return Engine(ContinuousScheduler(ContinuousParams(), allocator), fake,
                  max_model_len=1000)


def test_requests_are_submitted_at_their_arrival_and_idle_time_is_slept():
    fake = FakeTime()
    engine = _engine(fake)
    requests = [Request(0, 0.0, 4, 2), Request(1, 0.5, 4, 1), Request(2, 10.0, 4, 1)]
    end_s = run_wall_clock(engine, requests, clock=fake.clock, sleep=fake.sleep)
    seqs = engine.sequences
    # Request 0 prefills in [0, 1); request 1 (arrived at 0.5) is seen at 1.0 and prefills in
    # [1, 2) while request 0 waits; request 0 decodes in [2, 3); then the loop sleeps to 10.
    assert [seqs[0].first_scheduled_s, seqs[1].first_scheduled_s] == [0.0, 1.0]
    assert list(seqs[0].token_times_s) == [1.0, 3.0]
    assert fake.sleeps == [7.0]
    assert seqs[2].first_scheduled_s == 10.0 and list(seqs[2].token_times_s) == [11.0]
    assert end_s == 11.0


def test_horizon_leaves_later_work_undone():
    fake = FakeTime()
    engine = _engine(fake)
    requests = [Request(0, 0.0, 4, 5), Request(1, 50.0, 4, 1)]
    end_s = run_wall_clock(engine, requests, horizon_s=3.0, clock=fake.clock, sleep=fake.sleep)
    assert end_s == 3.0
    assert engine.sequences[0].num_output_tokens == 3
    assert 1 not in engine.sequences


def test_a_request_the_executor_cannot_read_is_rejected_at_submission():
    fake = FakeTime()
    engine = _engine(fake)
    requests = [Request(0, 0.0, 4, 1), Request(1, 2.0, 3, 1, prompt_token_ids=(1, 2, 99))]

    def reject_reason(request):
        return "bad ids" if request.prompt_token_ids else None

    run_wall_clock(engine, requests, reject_reason=reject_reason, clock=fake.clock,
                   sleep=fake.sleep)
    rejected = engine.sequences[1]
    assert (rejected.status.value, rejected.reason, rejected.finish_s) == ("rejected", "bad ids",
                                                                           2.0)
    assert engine.sequences[0].status.value == "finished"


class StepTimingFake(FakeTime):
    """An executor that, like the real one, times a step from the run loop's `step_began`."""

    def __init__(self) -> None:
        super().__init__()
        self.began_s: float | None = None

    def step_began(self) -> None:
        self.began_s = self.now_s

    def execute(self, plan) -> StepResult:
        self.now_s += 1.0
        began_s, self.began_s = self.began_s, None
        return StepResult(self.now_s - began_s)


def test_token_times_include_the_scheduling_before_the_forward_pass():
    fake = StepTimingFake()
    engine = _engine(fake)
    schedule = engine.scheduler.schedule

    def slow_schedule(now_s):  # each schedule() takes 0.25 s of the run's clock
        fake.now_s += 0.25
        return schedule(now_s)

    engine.scheduler.schedule = slow_schedule
    run_wall_clock(engine, [Request(0, 0.0, 4, 2)], clock=fake.clock, sleep=fake.sleep)
    # Without the hook the tokens would be stamped 0.25 s before they exist: 1.0 and 2.25.
    assert list(engine.sequences[0].token_times_s) == [1.25, 2.5]


def test_time_spent_between_steps_is_left_out_of_the_run():
    """A speed meter's readings take the run's time, but the run is timed as if they had
    not: the same token times and sleeps as without them, and every step got its reading."""
    fake = FakeTime()
    engine = _engine(fake)
    readings: list[float] = []

    def read(now_s: float) -> float:
        readings.append(now_s)
        fake.now_s += 0.125
        return 0.125

    requests = [Request(0, 0.0, 4, 2), Request(1, 0.5, 4, 1), Request(2, 10.0, 4, 1)]
    end_s = run_wall_clock(engine, requests, clock=fake.clock, sleep=fake.sleep,
                           between_steps=read)
    seqs = engine.sequences
    assert list(seqs[0].token_times_s) == [1.0, 3.0]
    assert list(seqs[2].token_times_s) == [11.0]
    assert fake.sleeps == [7.0]
    assert end_s == 11.0
    # Before each of the four steps and each idle check (after the third step, and at the end).
    assert readings == [0.0, 1.0, 2.0, 3.0, 10.0, 11.0]


def test_closed_loop_sends_each_request_when_a_slot_frees():
    fake = FakeTime()
    requests = [Request(i, 0.0, 4, 2) for i in range(4)] + [Request(4, 0.0, 4, 1, stage=1)]
    loop = ClosedLoop(requests, [ClosedLoopStage(4, 2), ClosedLoopStage(1, 1)])
    allocator = PagedAllocator(PagedParams(block_size=4, num_blocks=64))
    engine = Engine(ContinuousScheduler(ContinuousParams(), allocator), fake, max_model_len=1000,
                    on_done=lambda _: loop.finished())
    end_s = run_wall_clock(engine, [], clock=fake.clock, sleep=fake.sleep, closed_loop=loop)
    seqs = engine.sequences
    # Two at a time (prefill, then the second token: done 2 s later); the next stage's one
    # request once both of the last pair are done.
    assert [seqs[i].request.arrival_time_s for i in range(5)] == [0.0, 0.0, 2.0, 2.0, 4.0]
    assert [seqs[i].finish_s for i in range(5)] == [2.0, 2.0, 4.0, 4.0, 5.0]
    assert end_s == 5.0 and fake.sleeps == [] and loop.all_sent and loop.num_in_flight == 0


def test_closed_loop_rejections_free_their_slot_at_once():
    fake = FakeTime()
    requests = [Request(0, 0.0, 2000, 2), Request(1, 0.0, 4, 1)]
    loop = ClosedLoop(requests, [ClosedLoopStage(2, 1)])
    allocator = PagedAllocator(PagedParams(block_size=4, num_blocks=64))
    engine = Engine(ContinuousScheduler(ContinuousParams(), allocator), fake, max_model_len=1000,
                    on_done=lambda _: loop.finished())
    assert run_wall_clock(engine, [], clock=fake.clock, sleep=fake.sleep, closed_loop=loop) == 1.0
    assert engine.sequences[0].status.value == "rejected"
    assert engine.sequences[1].request.arrival_time_s == 0.0
