"""`make_plan`: check a plan request, search every family (in parallel through a sweep
backend, or in this process), price and rank what passes.

Ranking: by dollars per hour (GPUs x `--gpu-price`) when prices are given, else by GPU count
(then `$` columns are "-"); ties go to the larger headroom, then to grid order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from sim.config import ReplayOptions, load_workload, resolve
from sim.cost.catalog import get_hardware, get_model
from sim.plan.search import (MAX_NUM_SEQS, TOKEN_BUDGETS, Candidate, Family, Target, check_slo,
                             families, non_default, run_family, search_family,
                             tp_degrees)
from sim.sweep.capacity import mean_rate

DEFAULT_MAX_GPUS = 64
SEARCHED = ("replicas", "disaggregate")
"""Options the plan always searches: giving them is an error, not a silent override."""

ProgressFn = Callable[[int, int, Candidate], None]
"""`progress(done, total, candidate)` as each family's search ends."""


@dataclass(frozen=True, slots=True)
class PlanRequest:
    base: ReplayOptions
    """Replay options every configuration shares (model, trace, seed, router, ...)."""
    hardware: list[str]
    slo: dict[str, float]
    rate_scale: float | None = None
    rate_req_s: float | None = None
    """Target load in requests/s (converted to a rate scale of the trace); at most one of
    the two; neither: the trace as recorded (rate scale 1)."""
    prices: dict[str, float] = field(default_factory=dict)
    """USD per GPU-hour by hardware name; empty: rank by GPU count."""
    max_gpus: int = DEFAULT_MAX_GPUS
    disaggregate: bool = False
    tps: list[int] | None = None
    """TP degrees to try; None: every degree the model allows."""
    token_budgets: list[int] = field(default_factory=lambda: list(TOKEN_BUDGETS))
    max_num_seqs: list[int] = field(default_factory=lambda: list(MAX_NUM_SEQS))


@dataclass(slots=True)
class Plan:
    request: PlanRequest
    target: Target
    base_rate_req_s: float
    """The unscaled trace's mean arrival rate; target req/s = this x target.rate_scale."""
    candidates: list[Candidate]
    """One per family, grid order, feasible or not."""
    ranked: list[Candidate]
    """The feasible candidates, best first."""

    @property
    def ranked_by(self) -> str:
        return "usd_per_hour" if self.request.prices else "num_gpus"

    @property
    def best(self) -> Candidate | None:
        return self.ranked[0] if self.ranked else None

    @property
    def num_simulations(self) -> int:
        return sum(c.num_simulations for c in self.candidates)

    def metrics(self, candidate: Candidate) -> dict[str, Any]:
        """A feasible candidate's price and throughput figures (None where not applicable)."""
        s = candidate.summary or {}
        price = self.request.prices.get(candidate.family.hardware)
        usd_per_hour = candidate.num_gpus * price if price is not None else None
        output_tok_s = s.get("output_throughput_tok_s")
        tpot_mean_s = s.get("tpot_mean_s")
        return {
            "usd_per_hour": usd_per_hour,
            "usd_per_million_output_tokens": (usd_per_hour / (output_tok_s * 3600) * 1e6
                                              if usd_per_hour is not None and output_tok_s
                                              else None),
            "output_tok_s": output_tok_s,
            "output_tok_s_per_gpu": output_tok_s / candidate.num_gpus if output_tok_s else None,
            "tok_s_per_user": 1 / tpot_mean_s if tpot_mean_s else None,
            "headroom_rate_scale": candidate.headroom_rate_scale,
        }


def parse_ints(text: str, label: str) -> list[int]:
    """'2048,8192' -> [2048, 8192]; `label` names the input in the error."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"{label} takes comma-separated integers, got {text!r}") from None


def check_request(request: PlanRequest) -> tuple[list[Family], Target, float]:
    """Every bad input as one ValueError before any simulation; the families to search."""
    base = request.base
    given = [name for name in SEARCHED if getattr(base, name) != getattr(ReplayOptions(), name)]
    if given:
        raise ValueError(f"plan searches {' and '.join('--' + n for n in given)} itself; "
                         "drop them (--disaggregate auto also tries P:D splits)")
    if request.rate_scale is not None and request.rate_req_s is not None:
        raise ValueError("give either --rate-scale X or --rate R, not both")
    for name, value in (("--rate-scale", request.rate_scale), ("--rate", request.rate_req_s)):
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    if request.max_gpus < 1:
        raise ValueError(f"--max-gpus must be >= 1, got {request.max_gpus}")
    if not request.hardware:
        raise ValueError("--hardware needs at least one name, e.g. h100,a100")
    hardware = [get_hardware(name).name for name in request.hardware]
    unpriced = [name for name in hardware if request.prices and name not in request.prices]
    if unpriced:
        raise ValueError(f"--gpu-price lacks a price for {', '.join(unpriced)}")
    unused = sorted(set(request.prices) - set(hardware))
    if unused:
        raise ValueError(f"--gpu-price names {', '.join(unused)}, not in --hardware")
    check_slo(request.slo)
    if base.executor != "sim" or base.pace != "trace":
        raise ValueError("plan scales the trace's arrivals in the simulator: it needs "
                         "--executor sim and --pace trace")
    model = get_model(base.model)
    allowed = tp_degrees(model, request.max_gpus)
    tps = allowed if request.tps is None else request.tps
    bad_tp = [tp for tp in tps if tp not in allowed]
    if bad_tp or not tps:
        raise ValueError(f"{model.name} allows TP {', '.join(map(str, allowed)) or 'none'} "
                         f"within --max-gpus {request.max_gpus}; got {bad_tp or tps}")
    for name, values in (("token budget", request.token_budgets),
                         ("max_num_seqs", request.max_num_seqs)):
        if not values or any(v < 1 for v in values):
            raise ValueError(f"every {name} must be >= 1, got {values}")
    grid = families(hardware, tps, base.scheduler, request.token_budgets,
                    request.max_num_seqs, request.disaggregate)
    resolve(base.updated(grid[0].knobs()))  # bad replay options: one error now, not per family
    base_rate = mean_rate(base)
    if request.rate_req_s is not None:
        scale = request.rate_req_s / base_rate
    else:
        scale = request.rate_scale if request.rate_scale is not None else base.rate_scale
    num_invalid = len(load_workload(base).invalid_rows)
    return grid, Target(request.slo, scale, request.max_gpus, num_invalid), base_rate


def make_plan(request: PlanRequest, *, backend: str | None = "local", workers: int | None = None,
              address: str | None = None, progress: ProgressFn | None = None) -> Plan:
    """Search every family and rank the feasible ones. `backend` None runs the families one
    after another in this process (the dashboard, small plans); `local` or `ray` runs them as
    cells of `sim.sweep.backends.run_cells`."""
    grid, target, base_rate = check_request(request)
    base = request.base.updated({"rate_scale": 1.0})
    found: dict[int, Candidate] = {}
    if backend is None:
        for index, family in enumerate(grid):
            found[index] = search_family(base, family, target)
            if progress is not None:
                progress(len(found), len(grid), found[index])
    else:
        from sim.sweep.backends import run_cells

        shared = {"base": non_default(base), "target": asdict(target)}
        cells = {i: shared | {"family": asdict(f)} for i, f in enumerate(grid)}
        for index, outcome in run_cells(cells, backend, workers=workers, address=address,
                                        task=run_family):
            found[index] = (Candidate.from_dict(outcome["candidate"])
                            if outcome["error"] is None
                            else Candidate(grid[index], False, outcome["error"]))
            if progress is not None:
                progress(len(found), len(grid), found[index])
    candidates = [found[i] for i in range(len(grid))]
    plan = Plan(request, target, base_rate, candidates, [])
    plan.ranked = sorted((c for c in candidates if c.feasible), key=lambda c: _rank_key(plan, c))
    return plan


def _rank_key(plan: Plan, candidate: Candidate) -> tuple[float, float, int]:
    metrics = plan.metrics(candidate)
    cost = metrics["usd_per_hour"] if plan.request.prices else candidate.num_gpus
    headroom = candidate.headroom_rate_scale or 0.0
    return cost, -headroom, plan.candidates.index(candidate)
