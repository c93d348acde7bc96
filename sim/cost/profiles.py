"""Measured timings as `TimingSample`s: readers for the shared GPU profiles and servesim's own.

Every reader turns one file into samples that say which batch ran, which part of the model the
clock covered (`group`), and how long it took, so `sim.cost.calibrate` can compare each one with
the matching term of the roofline. Groups:

- "linear": the projection/MLP GEMMs of the model (or of one layer) on one TP rank;
- "overhead": the engine's CPU time per iteration outside the model (scheduling, input
  preparation, sampling, output processing, RPC);
- "iteration": one whole engine iteration, wall clock.

Times in the shared files are milliseconds unless a column says seconds (see
shared/calibration/README.md); samples are always seconds. A few rows are left out because they
cannot be the work their row states; each exclusion below says why.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sim.cost.catalog import get_hardware, get_model
from sim.cost.specs import ModelSpec

GROUPS: tuple[str, ...] = ("linear", "overhead", "iteration")
"""No shared file times attention alone in a way the roofline can use (see
`read_sarathi_table2`), so attention is fitted through whole iterations."""

S_PER_MS = 1e-3

VIDUR_LINEAR_OPS: tuple[str, ...] = (
    "attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_act", "mlp_down_proj",
)
"""The vidur ops that make up servesim's "linear" group (the activation between the MLP GEMMs
is memory traffic the roofline's linear bytes already count)."""

CPU_OVERHEAD_STAGES: tuple[str, ...] = (
    "schedule_median", "sampler_e2e_median", "prepare_inputs_e2e_median",
    "process_model_outputs_median", "ray_comm_time_mean",
)
"""The stages Vidur's execution-time predictor adds to every iteration (`ray_comm_time` has no
median column)."""


@dataclass(frozen=True, slots=True)
class TimingSample:
    """One measured time of one batch shape.

    `new_tokens[i]` tokens of sequence i were computed on top of `context_tokens[i]` cached
    ones. `model` is None for "overhead" samples, which do not depend on the model's shapes.
    `source_rows` are 1-based data rows of `source_file` (several when repeats were merged).
    """

    new_tokens: tuple[int, ...]
    context_tokens: tuple[int, ...]
    group: str
    model: ModelSpec | None
    hardware: str
    tp: int
    measured_s: float
    source_file: str
    source_rows: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"unknown op group {self.group!r}; choose one of {GROUPS}")
        if len(self.new_tokens) != len(self.context_tokens):
            raise ValueError("new_tokens and context_tokens must have one entry per sequence")
        if self.measured_s <= 0.0:
            raise ValueError(f"{self.source_file}:{self.source_rows}: measured time must be > 0")
        if self.model is None and self.group != "overhead":
            raise ValueError(f"a {self.group!r} sample needs a model spec")

    @property
    def source(self) -> str:
        rows = ",".join(str(r) for r in self.source_rows)
        return f"{self.source_file}:{rows}"


def _rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as fh:
            return list(csv.DictReader(fh))
    except FileNotFoundError:
        raise ValueError(f"profile file not found: {path}") from None


# ---- vidur --------------------------------------------------------------------------------
def vidur_layer_spec(row: dict[str, str], hf_id: str) -> ModelSpec:
    """A one-layer ModelSpec from the shape columns of a vidur compute row.

    QKV biases (Qwen, phi-2) are ignored: they are under 0.1% of a layer's weights.
    """
    return ModelSpec(
        name=f"{hf_id.split('/')[-1]} (1 layer)", hf_id=hf_id, num_layers=1,
        hidden_size=int(row["n_embd"]), intermediate_size=int(row["n_expanded_embd"]),
        num_heads=int(row["n_head"]), num_kv_heads=int(row["n_kv_head"]),
        vocab_size=int(row["vocab_size"]), max_model_len=int(row["num_tokens"]),
        gated_mlp=row["use_gated_mlp"] == "True",
    )


def read_vidur_mlp(path: Path, hardware: str, source: str) -> list[TimingSample]:
    """vidur `mlp.csv`: one layer's linear ops on one rank vs tokens in the batch and TP.

    The tokens are a flat count (these ops do not see sequences), so each row becomes one
    sequence of `num_tokens` new tokens. The folder above `mlp.csv` names the model.
    """
    hf_id = "/".join(path.parts[-3:-1])
    samples = []
    spec: ModelSpec | None = None
    for index, row in enumerate(_rows(path), start=1):
        if spec is None:
            spec = vidur_layer_spec(row, hf_id)
        time_ms = sum(float(row[f"time_stats.{op}.median"]) for op in VIDUR_LINEAR_OPS)
        samples.append(TimingSample(
            (int(row["num_tokens"]),), (0,), "linear", spec, hardware,
            int(row["num_tensor_parallel_workers"]), time_ms * S_PER_MS, source, (index,),
        ))
    return samples


def read_cpu_overheads(path: Path, hardware: str, source: str) -> list[TimingSample]:
    """vidur `cpu_overheads.csv`: the engine's CPU time per decode iteration vs batch size."""
    samples = []
    for index, row in enumerate(_rows(path), start=1):
        batch = int(row["batch_size"])
        time_ms = sum(float(row[stage]) for stage in CPU_OVERHEAD_STAGES)
        samples.append(TimingSample(
            (1,) * batch, (0,) * batch, "overhead", None, hardware,
            int(row["tensor_parallel_degree"]), time_ms * S_PER_MS, source, (index,),
        ))
    return samples


# ---- splitwise ----------------------------------------------------------------------------
SPLITWISE_HARDWARE: dict[str, str] = {"a100-80gb": "a100", "h100-80gb": "h100"}
"""Power-capped H100 rows (`h100-80gb-pcap`) are not a catalog device and are left out."""

SPLITWISE_MODELS: dict[str, str] = {"llama2-70b": "llama-2-70b"}
"""BLOOM-176B is not in the catalog (and its ALiBi attention is not modelled); left out."""


def _splitwise_excluded(tp: int, batch: int) -> bool:
    """TP 2 at batch 64, on both GPUs, prefills 64 x 512 tokens 8x faster than batch 32 does
    32 x 512, and decodes faster than batch 32: those runs cannot have done the stated work
    (with 69 GB of weights per GPU, little of 80 GB is left for a 32k-token prefill)."""
    return tp == 2 and batch == 64


def read_splitwise(path: Path, hardware: str, source: str) -> list[TimingSample]:
    """splitwise `perf_model.csv`: whole-model prefill time and per-token decode time.

    Repeats of a configuration are merged into their median. A configuration gives two
    samples: the prefill of `batch_size` prompts in one iteration, and one decode iteration of
    `batch_size` sequences at the mean context of the decode phase (prompt + output / 2, exact
    for a KV-read term linear in context).
    """
    runs: dict[tuple, list[tuple[int, float, float]]] = defaultdict(list)
    for index, row in enumerate(_rows(path), start=1):
        hw = SPLITWISE_HARDWARE.get(row["hardware"])
        name = SPLITWISE_MODELS.get(row["model"])
        if hw != hardware or name is None:
            continue
        tp, batch = int(row["tensor_parallel"]), int(row["batch_size"])
        if _splitwise_excluded(tp, batch):
            continue
        key = (name, hw, tp, int(row["prompt_size"]), batch, int(row["token_size"]))
        runs[key].append((index, float(row["prompt_time"]), float(row["token_time"])))
    samples = []
    for (name, hw, tp, prompt, batch, output), reps in runs.items():
        model = get_model(name)
        rows = tuple(r[0] for r in reps)
        prefill_ms = statistics.median(r[1] for r in reps)
        decode_ms = statistics.median(r[2] for r in reps)
        samples.append(TimingSample((prompt,) * batch, (0,) * batch, "iteration", model, hw, tp,
                                    prefill_ms * S_PER_MS, source, rows))
        context = prompt + output // 2
        samples.append(TimingSample((1,) * batch, (context,) * batch, "iteration", model, hw, tp,
                                    decode_ms * S_PER_MS, source, rows))
    return samples


# ---- sarathi-serve (Yi-34B-200K, TP 2, A100 80GB PCIe with pairwise NVLink) ---------------
# Fitted as the catalog's `a100` (SXM): the PCIe card's 5% lower bandwidth (1,935 against
# 2,039 GB/s) is left to the efficiencies.
SARATHI_MODEL = "yi-34b-200k"
SARATHI_TP = 2
SARATHI_DECODE_CONTEXT_TOKENS = 1021
"""Figure 2's decode runs use 1,024-token requests at prefill:decode 255:1, so 1,020-token
prompts decoding 4 tokens: their decode batches attend to about 1,021 tokens."""
SARATHI_TABLE2_DECODE_CONTEXT_TOKENS = 1032
"""Table 2 runs 1,024-token prompts decoding 16 tokens: decodes attend to about 1,024 + 8."""


def read_sarathi_figure2(path: Path, hardware: str, source: str) -> list[TimingSample]:
    """`figure2_decode.csv` / `figure2_prefill.csv`: one batch per row, time in seconds.

    Batch id 0 is the run's first batch (CUDA and NCCL warm-up: 256 tokens took longer than 512
    in the prefill run) and is left out.
    """
    model = get_model(SARATHI_MODEL)
    samples = []
    for index, row in enumerate(_rows(path), start=1):
        if float(row["Batch Id"]) == 0.0:
            continue
        prefill, decode = int(row["batch_num_prefill_tokens"]), int(row["batch_num_decode_tokens"])
        new = ((prefill,) if prefill else ()) + (1,) * decode
        ctx = ((0,) if prefill else ()) + (SARATHI_DECODE_CONTEXT_TOKENS,) * decode
        samples.append(TimingSample(new, ctx, "iteration", model, hardware, SARATHI_TP,
                                    float(row["batch_execution_time"]), source, (index,)))
    return samples


def read_sarathi_figure9(path: Path, hardware: str, source: str) -> list[TimingSample]:
    """`figure9_chunking_overhead.csv`: whole-prefill time (ms) for several chunk sizes.

    Only unchunked rows (chunk >= prompt) are one iteration; a chunked prefill is a sequence of
    iterations, which a single batch shape cannot state, so those rows are left out.
    """
    model = get_model(SARATHI_MODEL)
    samples = []
    for index, row in enumerate(_rows(path), start=1):
        prompt, chunk = int(row["prefill_length"]), int(row["chunk_size"])
        if chunk < prompt:
            continue
        samples.append(TimingSample((prompt,), (0,), "iteration", model, hardware, SARATHI_TP,
                                    float(row["prefill_execution_time"]) * S_PER_MS, source, (index,)))
    return samples


def read_sarathi_table2(path: Path, hardware: str, source: str) -> list[TimingSample]:
    """`table2_batch_composition.csv`: decode-only, mixed and prefill-only batches (ms).

    Each row gives the whole batch time and the time of its linear ops (all layers, one rank).
    The prefill chunk is taken to start at context 0. The `attention` column is not used: it
    includes per-layer kernel launch floors (3 ms for 4 decode tokens whose KV is 0.5 GB) that
    the attention roofline term does not model, and it falls from 13.7 ms to 4.0 ms when 3 of
    1,024 prefill tokens become decodes, which no work count explains.
    """
    model = get_model(SARATHI_MODEL)
    samples = []
    for index, row in enumerate(_rows(path), start=1):
        prefill, decode = int(row["batch_num_prefill_tokens"]), int(row["batch_num_decode_tokens"])
        new = ((prefill,) if prefill else ()) + (1,) * decode
        ctx = ((0,) if prefill else ()) + (SARATHI_TABLE2_DECODE_CONTEXT_TOKENS,) * decode
        for group, column in (("iteration", "batch_execution_time"), ("linear", "linear")):
            samples.append(TimingSample(new, ctx, group, model, hardware, SARATHI_TP,
                                        float(row[column]) * S_PER_MS, source, (index,)))
    return samples


# ---- the shared calibration folder --------------------------------------------------------
SARATHI_DIR = "sarathi_serve_osdi24_yi34b_a100_tp2"


def shared_profile_files(shared_dir: Path, hardware: str) -> list[str]:
    """The files (relative to `shared_dir`) that profile `hardware`, in a fixed order."""
    root = Path(shared_dir)
    files = sorted(p.relative_to(root).as_posix()
                   for p in (root / "vidur" / "compute" / hardware).glob("*/*/mlp.csv"))
    files.append("splitwise_sim/perf_model.csv")
    if hardware == "a100":
        files += [f"{SARATHI_DIR}/{name}" for name in (
            "figure2_decode.csv", "figure2_prefill.csv", "figure9_chunking_overhead.csv",
            "table2_batch_composition.csv")]
        files.append("vidur/cpu_overhead/a100/cpu_overheads.csv")
    return files


def read_shared_file(shared_dir: Path, relpath: str, hardware: str) -> list[TimingSample]:
    """Samples of one shared file, for `hardware` (a file may hold several devices)."""
    path = Path(shared_dir) / relpath
    name = path.name
    if name == "mlp.csv":
        return read_vidur_mlp(path, hardware, relpath)
    if name == "cpu_overheads.csv":
        return read_cpu_overheads(path, hardware, relpath)
    if name == "perf_model.csv":
        return read_splitwise(path, hardware, relpath)
    if name.startswith("figure2_"):
        return read_sarathi_figure2(path, hardware, relpath)
    if name.startswith("figure9_"):
        return read_sarathi_figure9(path, hardware, relpath)
    if name.startswith("table2_"):
        return read_sarathi_table2(path, hardware, relpath)
    raise ValueError(f"no reader for {relpath}")


def shared_samples(shared_dir: Path, hardware: str) -> list[TimingSample]:
    """Every sample the shared calibration folder holds for `hardware` ("a100" or "h100")."""
    files = shared_profile_files(shared_dir, hardware)
    if len(files) == 1:
        raise ValueError(f"{shared_dir}: no vidur compute profiles for hardware {hardware!r}")
    return [s for f in files for s in read_shared_file(shared_dir, f, hardware)]


TRIM_SHARE = 0.1
"""Share of a point's timed steps cut from each tail before averaging (`trimmed_mean_s`)."""


def trimmed_mean_s(times_s: list[float], trim_share: float = TRIM_SHARE) -> float:
    """The mean of `times_s` without the `trim_share` smallest and largest values."""
    ordered = sorted(times_s)
    cut = int(len(ordered) * trim_share)
    kept = ordered[cut:len(ordered) - cut] or ordered
    return sum(kept) / len(kept)


# ---- servesim's own profile JSON ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Profile:
    """Whole-iteration timings of one model on `tp` devices of one hardware, as measured by a
    servesim backend. `machine` is free-form provenance (host, device, driver, versions).

    JSON form::

        {"model": "llama-3.2-1b", "hardware": "cpu", "tp": 1,
         "samples": [{"new_tokens": [128], "context_tokens": [0], "measured_s": 0.41}, ...],
         "machine": {...}}
    """

    model: str
    hardware: str
    tp: int
    samples: tuple[tuple[tuple[int, ...], tuple[int, ...], float], ...]
    """(new_tokens, context_tokens, measured_s) per measured iteration."""
    machine: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "model": self.model, "hardware": self.hardware, "tp": self.tp,
            "samples": [{"new_tokens": list(n), "context_tokens": list(c), "measured_s": t}
                        for n, c, t in self.samples],
            "machine": self.machine,
        }

    def timing_samples(self, source: str) -> list[TimingSample]:
        model, hardware = get_model(self.model), get_hardware(self.hardware)
        return [TimingSample(n, c, "iteration", model, hardware.name, self.tp, t, source, (i,))
                for i, (n, c, t) in enumerate(self.samples, start=1)]


def profile_from_json(data: dict, where: str = "profile") -> Profile:
    """Validate and convert the JSON form; errors name the offending field."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object")
    missing = {"model", "hardware", "tp", "samples"} - set(data)
    if missing:
        raise ValueError(f"{where}: missing keys {sorted(missing)}")
    get_model(data["model"])
    get_hardware(data["hardware"])
    if not isinstance(data["tp"], int) or data["tp"] < 1:
        raise ValueError(f"{where}: tp must be a positive integer, got {data['tp']!r}")
    samples = []
    for i, s in enumerate(data["samples"]):
        try:
            new = tuple(int(x) for x in s["new_tokens"])
            ctx = tuple(int(x) for x in s["context_tokens"])
            measured_s = float(s["measured_s"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where}: sample {i} needs new_tokens, context_tokens and "
                             f"measured_s ({exc})") from None
        if len(new) != len(ctx) or not new or measured_s <= 0.0:
            raise ValueError(f"{where}: sample {i} needs equal-length non-empty token lists and "
                             f"measured_s > 0")
        samples.append((new, ctx, measured_s))
    if not samples:
        raise ValueError(f"{where}: no samples")
    return Profile(data["model"], data["hardware"], data["tp"], tuple(samples),
                   dict(data.get("machine", {})))


def read_profile(path: str | Path) -> Profile:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"profile file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return profile_from_json(data, str(path))


def write_profile(path: str | Path, profile: Profile) -> Path:
    path = Path(path)
    path.write_text(json.dumps(profile.to_json(), indent=1) + "\n")
    return path
