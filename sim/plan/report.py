"""A plan as words, a table and files.

    DIR/plan.csv     one row per searched family (grid order), feasible or not, with its rank
    DIR/plan.json    target, ranking rule, `best` (replay options), the minimality probe,
                     every candidate with its probes
    DIR/best.toml    the best configuration as flat replay keys: `servesim replay --config`
    DIR/pareto.html  output tokens/s per GPU against tokens/s per user (Altair, when installed)
    DIR/pareto.png   the same chart, when Altair has a PNG renderer (vl-convert)
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path
from typing import Any

from rich.table import Table

from sim.config import ReplayOptions
from sim.plan.planner import Plan
from sim.plan.search import Candidate, Probe

BEST_KEYS = ("model", "hardware", "tp", "pp", "replicas", "disaggregate", "scheduler",
             "token_budget", "max_num_seqs", "trace", "rate_scale")
"""best.toml's leading keys, always written (other options follow when not default)."""
CSV_COLUMNS = ("rank", "hardware", "tp", "scheduler", "token_budget", "max_num_seqs",
               "disaggregated", "feasible", "replicas", "disaggregate", "num_gpus",
               "usd_per_hour", "usd_per_million_output_tokens", "output_tok_s",
               "output_tok_s_per_gpu", "tok_s_per_user", "headroom_rate_scale",
               "one_replica_rate_scale", "fewer_replicas_misses", "num_simulations", "reason")


def describe(candidate: Candidate) -> str:
    """'H100 (TP 1, 2 replicas, chunked 2048)'."""
    f = candidate.family
    if candidate.disaggregate:
        layout = f"P:D {candidate.disaggregate}"
    elif candidate.feasible:
        layout = f"{candidate.replicas} replica{'s' if candidate.replicas != 1 else ''}"
    else:
        layout = "P:D" if f.disaggregated else "colocated"
    knob = f"{f.scheduler} {f.token_budget}" if f.token_budget is not None else f.scheduler
    return f"{f.hardware.upper()} (TP {f.tp}, {layout}, {knob}, {f.max_num_seqs} seqs)"


def answer_line(plan: Plan) -> str:
    """The answer first: '2 x H100 (TP 1, 2 replicas, chunked 2048): $5.00/h, P99 TTFT 0.9 s'."""
    best = plan.best
    if best is None:
        return no_answer_line(plan)
    usd = plan.metrics(best)["usd_per_hour"]
    price = f"${usd:.2f}/h" if usd is not None else "$-/h (no --gpu-price: ranked by GPU count)"
    s = best.summary or {}
    slo = ", ".join(f"{_metric_label(name)} {s[name]:.3g} s" for name in plan.target.slo)
    return f"{best.num_gpus} x {describe(best)}: {price}, {slo}"


def no_answer_line(plan: Plan) -> str:
    reasons = sorted({c.reason for c in plan.candidates})
    return (f"no configuration meets {_slo_text(plan)} at rate scale "
            f"{plan.target.rate_scale:.4g} ({plan.target.rate_scale * plan.base_rate_req_s:.4g}"
            f" req/s) within --max-gpus {plan.target.max_gpus}; e.g. {reasons[0]}")


def ranked_table(plan: Plan) -> Table:
    table = Table(title=f"configurations meeting {_slo_text(plan)} at rate scale "
                        f"{plan.target.rate_scale:.4g}, ranked by "
                        f"{'$/h' if plan.request.prices else 'GPU count'}",
                  title_justify="left")
    for col in ("#", "configuration", "GPUs", "$/h", "$/M out tok", "tok/s/GPU", "tok/s/user",
                *(_metric_label(n) for n in plan.target.slo), "headroom"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for rank, candidate in enumerate(plan.ranked, 1):
        m = plan.metrics(candidate)
        s = candidate.summary or {}
        table.add_row(str(rank), describe(candidate), str(candidate.num_gpus),
                      _fmt(m["usd_per_hour"], ".2f"), _fmt(m["usd_per_million_output_tokens"], ".3g"),
                      _fmt(m["output_tok_s_per_gpu"], ".4g"), _fmt(m["tok_s_per_user"], ".4g"),
                      *(_fmt(s[n], ".3g") for n in plan.target.slo),
                      "-" if m["headroom_rate_scale"] is None
                      else f"x{m['headroom_rate_scale']:.3g}")
    return table


def write_plan(plan: Plan, out_dir: str | Path) -> list[Path]:
    """Every file the plan writes; best.toml only when a configuration meets the target."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [_write_csv(plan, out / "plan.csv"), _write_json(plan, out / "plan.json")]
    if plan.best is not None:
        (out / "best.toml").write_text(best_toml(plan))
        written.append(out / "best.toml")
    written += write_pareto(plan, out)
    return written


def best_options(plan: Plan) -> ReplayOptions | None:
    best = plan.best
    return None if best is None else ReplayOptions().updated(best.options)


def best_toml(plan: Plan) -> str:
    options = best_options(plan)
    assert options is not None, "best.toml needs a best configuration"
    lines = [f"# servesim plan: {answer_line(plan)}",
             "# reproduce: servesim replay --config best.toml",
             "# trace \"\": the bundled trace"]
    defaults = ReplayOptions()
    for name in ReplayOptions.names():
        value = getattr(options, name)
        leading = name in BEST_KEYS
        if value is None or (not leading and value == getattr(defaults, name)):
            continue
        lines.append(f"{name} = {json.dumps(value)}")  # JSON scalars are valid TOML values
    return "\n".join(lines) + "\n"


def plan_rows(plan: Plan) -> list[dict[str, Any]]:
    """plan.csv's rows: every family, grid order, with its rank among the feasible."""
    ranks = {id(c): rank for rank, c in enumerate(plan.ranked, 1)}
    rows = []
    for c in plan.candidates:
        f = c.family
        metrics = plan.metrics(c) if c.feasible else {}
        rows.append({
            "rank": ranks.get(id(c)), "hardware": f.hardware, "tp": f.tp,
            "scheduler": f.scheduler, "token_budget": f.token_budget,
            "max_num_seqs": f.max_num_seqs, "disaggregated": f.disaggregated,
            "feasible": c.feasible, "replicas": c.replicas if c.feasible else None,
            "disaggregate": c.disaggregate, "num_gpus": c.num_gpus if c.feasible else None,
            **{k: metrics.get(k) for k in ("usd_per_hour", "usd_per_million_output_tokens",
                                           "output_tok_s", "output_tok_s_per_gpu",
                                           "tok_s_per_user", "headroom_rate_scale")},
            **{name: (c.summary or {}).get(name) for name in plan.target.slo},
            "one_replica_rate_scale": c.one_replica_rate_scale,
            "fewer_replicas_misses": " | ".join(p.misses for p in c.fewer) or None,
            "num_simulations": c.num_simulations, "reason": c.reason or None,
        })
    return rows


def plan_columns(plan: Plan) -> list[str]:
    """plan.csv's columns: CSV_COLUMNS with the SLO metrics before the headroom."""
    split = CSV_COLUMNS.index("headroom_rate_scale")
    return [*CSV_COLUMNS[:split], *plan.target.slo, *CSV_COLUMNS[split:]]


def plan_csv(plan: Plan) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=plan_columns(plan), lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if row[k] is None else row[k] for k in plan_columns(plan)}
                      for row in plan_rows(plan)])
    return buffer.getvalue()


def _write_csv(plan: Plan, path: Path) -> Path:
    path.write_text(plan_csv(plan))
    return path


def plan_json(plan: Plan) -> dict[str, Any]:
    best = plan.best
    return {
        "answer": answer_line(plan),
        "target": {"slo": plan.target.slo, "rate_scale": plan.target.rate_scale,
                   "rate_req_s": plan.target.rate_scale * plan.base_rate_req_s,
                   "max_gpus": plan.target.max_gpus},
        "ranked_by": plan.ranked_by,
        "prices_usd_per_gpu_hour": plan.request.prices,
        "best": best_toml_values(plan),
        "best_summary": best.summary if best is not None else None,
        "minimality_probe": [probe_dict(p) for p in best.fewer] if best is not None else None,
        "num_simulations": plan.num_simulations,
        "candidates": [c.to_dict() | {"rank": (plan.ranked.index(c) + 1) if c.feasible else None}
                       | (plan.metrics(c) if c.feasible else {}) for c in plan.candidates],
    }


def plan_json_text(plan: Plan) -> str:
    return json.dumps(plan_json(plan), indent=2) + "\n"


def best_toml_values(plan: Plan) -> dict[str, Any] | None:
    """The best configuration as replay options: BEST_KEYS always, others when not default."""
    options = best_options(plan)
    if options is None:
        return None
    defaults = ReplayOptions()
    return {name: getattr(options, name) for name in ReplayOptions.names()
            if name in BEST_KEYS or getattr(options, name) != getattr(defaults, name)}


def probe_dict(probe: Probe) -> dict[str, Any]:
    return {"replicas": probe.replicas, "disaggregate": probe.disaggregate,
            "meets": probe.meets, "misses": probe.misses}


def _write_json(plan: Plan, path: Path) -> Path:
    path.write_text(plan_json_text(plan))
    return path


def pareto_points(plan: Plan) -> list[dict[str, Any]]:
    """One point per feasible candidate, flagged when no other is better on both axes."""
    points = []
    for c in plan.ranked:
        m = plan.metrics(c)
        if m["output_tok_s_per_gpu"] is None or m["tok_s_per_user"] is None:
            continue
        points.append({"configuration": f"{c.num_gpus} x {describe(c)}",
                       "tok_s_per_gpu": m["output_tok_s_per_gpu"],
                       "tok_s_per_user": m["tok_s_per_user"], "hardware": c.family.hardware})
    for p in points:
        p["pareto"] = not any(
            q["tok_s_per_gpu"] >= p["tok_s_per_gpu"] and q["tok_s_per_user"] >= p["tok_s_per_user"]
            and (q["tok_s_per_gpu"], q["tok_s_per_user"]) != (p["tok_s_per_gpu"], p["tok_s_per_user"])
            for q in points)
    return points


def pareto_chart(plan: Plan) -> Any:
    """An Altair chart of the feasible candidates (Altair imported here only)."""
    import altair as alt

    points = pareto_points(plan)
    frontier = sorted((p for p in points if p["pareto"]), key=lambda p: p["tok_s_per_user"])
    dots = alt.Chart(alt.Data(values=points)).mark_point(filled=True, size=70).encode(
        x=alt.X("tok_s_per_user:Q", title="tokens/s per user (1 / mean TPOT)"),
        y=alt.Y("tok_s_per_gpu:Q", title="output tokens/s per GPU"),
        color=alt.Color("hardware:N"), shape=alt.Shape("pareto:N", title="Pareto-optimal"),
        tooltip=["configuration:N", "tok_s_per_gpu:Q", "tok_s_per_user:Q"])
    line = alt.Chart(alt.Data(values=frontier)).mark_line(color="gray").encode(
        x="tok_s_per_user:Q", y="tok_s_per_gpu:Q")
    return (line + dots).properties(
        width=480, height=320,
        title=f"configurations meeting {_slo_text(plan)} at rate scale "
              f"{plan.target.rate_scale:.3g}")


def write_pareto(plan: Plan, out: Path) -> list[Path]:
    """pareto.html when Altair is installed, pareto.png when it can also render one; a
    missing library or renderer skips that file, never fails the plan."""
    if not plan.ranked or importlib.util.find_spec("altair") is None:
        return []
    chart = pareto_chart(plan)
    html = out / "pareto.html"
    chart.save(str(html))
    written = [html]
    if importlib.util.find_spec("vl_convert") is not None:
        png = out / "pareto.png"
        try:
            chart.save(str(png))
        except Exception:  # noqa: BLE001 - a renderer that fails only costs the PNG
            png.unlink(missing_ok=True)
        else:
            written.append(png)
    return written


def _metric_label(name: str) -> str:
    """'ttft_p99_s' -> 'P99 TTFT'."""
    metric, _, stat = name.removesuffix("_s").partition("_")
    return f"{stat.upper()} {metric.upper()}"


def _slo_text(plan: Plan) -> str:
    return ", ".join(f"{_metric_label(n)} <= {b:g} s" for n, b in plan.target.slo.items())


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
