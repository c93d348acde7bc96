"""What a front end (the dashboard, `ui/`) may use of the simulator, besides `sim.api.simulate`.

One door: ui imports `sim.api` and this module, never `sim.*` internals, `policies` or `traces`
(a contract in pyproject.toml's `[tool.importlinter]`). Everything here is re-exported from the
module that owns it; a name a front end needs is added here, so what the dashboard depends on
stays one short list that internal moves can keep stable.
"""

from __future__ import annotations

# Options in, results out: what a run is configured with and what it returns.
from sim.assembly import ExecutorObserver, roofline_cost_model
from sim.option_help import OPTION_HELP
from sim.config import COST_MODELS, ReplayOptions, SimConfig, options_to_toml, resolve
from sim.policy_knobs import KNOB_OPTIONS, KnobOption
from sim.results import REQUEST_COLUMNS, Results
from sim.run_notes import run_notes
from policies.engine import Engine, Executor

# Policies by name, and the choices of their options (the dashboard's pickers).
from policies.decoding.block_diffusion import DECODINGS
from policies.kv.contiguous import RESERVE_MODES
from policies.kv.swap import PREEMPTION_MODES
from policies.registry import ALLOCATORS, ROUTERS, SCHEDULERS, SPECULATORS, TABLES
from policies.router.simple import LOAD_MEASURES
from policies.scheduler.chunked import ORDERS

# Models, hardware and the roofline.
from sim.cost.catalog import HARDWARE, MODELS, get_hardware, get_model
from sim.cost.coefficients import default_coefficients
from sim.cost.hardware_spec import load_hardware_spec
from sim.cost.hf_config import looks_like_path, model_from_hf_config
from sim.cost.intensity import IntensityRow, IterationRecorder, intensity_curve, intensity_table
from sim.cost.roofline import CostModel
from sim.cost.specs import DTYPE_BYTES

# Capacity planning.
from sim.plan.planner import Plan, PlanRequest, make_plan, parse_ints
from sim.plan.report import (answer_line, best_toml, describe, pareto_chart, plan_csv,
                             plan_json_text, plan_rows)
from sim.plan.search import Candidate, check_slo
from sim.sweep.capacity import parse_slo
from sim.sweep.cheapest import parse_prices

# Workloads: trace formats and the synthetic spec's syntax.
from traces import TRACE_FORMATS
from traces.inference_perf import TRACE_PREFIX
from traces.synthetic import ARRIVALS_SYNTAX, LENGTHS_SYNTAX

__all__ = [
    "ExecutorObserver", "roofline_cost_model", "COST_MODELS", "ReplayOptions", "SimConfig",
    "options_to_toml", "resolve", "REQUEST_COLUMNS", "Results", "Engine", "Executor",
    "RESERVE_MODES", "PREEMPTION_MODES", "ALLOCATORS", "ROUTERS", "SCHEDULERS", "SPECULATORS",
    "TABLES", "LOAD_MEASURES", "ORDERS", "DECODINGS", "OPTION_HELP", "run_notes",
    "KNOB_OPTIONS", "KnobOption",
    "HARDWARE", "MODELS", "get_hardware", "get_model", "default_coefficients",
    "load_hardware_spec", "looks_like_path", "model_from_hf_config", "IntensityRow",
    "IterationRecorder", "intensity_curve", "intensity_table", "CostModel", "DTYPE_BYTES",
    "Plan", "PlanRequest", "make_plan", "parse_ints", "answer_line", "best_toml", "describe",
    "pareto_chart", "plan_csv", "plan_json_text", "plan_rows", "Candidate", "check_slo",
    "parse_slo", "parse_prices",
    "TRACE_FORMATS", "TRACE_PREFIX", "ARRIVALS_SYNTAX", "LENGTHS_SYNTAX",
]
