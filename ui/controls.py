"""Input widgets generated from `ReplayOptions` and the policy and spec registries.

Every widget is labelled with the option's CLI name and keyed by it (with a prefix for the A/B
columns), so the dashboard, the CLI and the exported TOML speak one set of names. A policy,
model or hardware added to its registry appears in its drop-down, and a policy's knob
(`sim.public.KNOB_OPTIONS`) in its kind's section with the widget, choices and range it
declares, with no change here; an engine option added to `ReplayOptions` appears under "Other"
with a widget chosen from its type.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from sim.public import (ALLOCATORS, ARRIVALS_SYNTAX, COST_MODELS, DTYPE_BYTES, HARDWARE,
                        KNOB_OPTIONS, LENGTHS_SYNTAX, MODELS, OPTION_HELP, ROUTERS, SCHEDULERS,
                        SPECULATORS, TRACE_FORMATS, KnobOption, ReplayOptions,
                        load_hardware_spec, model_from_hf_config)
from ui.upload import (UPLOAD_LIMIT_BYTES, UPLOAD_TYPES, UploadError, store_upload, trace_spec,
                       user_message)

DEFAULTS = ReplayOptions(max_requests=500, slo_ttft_s=2.0, slo_tpot_s=0.1)
"""Dashboard defaults: the CLI's, with a 500-request slice (answers in about a second) and SLOs
so goodput and the sweep's capacity answer show on the first load."""

CHOICES: dict[str, tuple[Any, ...]] = {
    "model": tuple(MODELS),
    "hardware": tuple(HARDWARE),
    "cost_model": COST_MODELS,
    "scheduler": tuple(SCHEDULERS),
    "allocator": tuple(ALLOCATORS),
    "router": tuple(ROUTERS),
    "speculator": tuple(SPECULATORS),
    "weight_dtype": (None, *DTYPE_BYTES),
    "kv_dtype": tuple(DTYPE_BYTES),
    "draft_model": (None, *MODELS),
    "tiny_draft_model": (None, *MODELS),
    "trace_format": (None, *TRACE_FORMATS),
    **{k.name: k.choices for k in KNOB_OPTIONS if k.widget == "select"},
}
"""Drop-down choices: registries and catalogs, and each knob's declared choices (the
draft-model knobs take the model catalog, which no policy knows)."""
KNOBS: dict[str, KnobOption] = {k.name: k for k in KNOB_OPTIONS}

MODEL_CONFIG_LIMIT_BYTES = 1024 * 1024
"""Largest accepted config.json upload (real ones are a few kB)."""

KIND_SECTIONS = {"schedulers": "Scheduler", "allocators": "KV cache",
                 "speculators": "Speculative decoding", "routers": "Replicas and router",
                 "decoding": "Block diffusion"}
"""The section of each kind of policy: its knobs follow the section's engine options."""
ENGINE_SECTIONS: dict[str, tuple[str, ...]] = {
    "Model and hardware": ("model", "hardware", "cost_model", "tp", "weight_dtype", "kv_dtype",
                           "gpu_memory_utilization", "num_gpu_blocks", "max_model_len"),
    "Replicas and router": ("replicas", "router", "disaggregate", "kv_link_bandwidth_gb_s",
                            "kv_link_latency_s"),
    "Scheduler": ("scheduler", "max_num_batched_tokens", "swap_space_gb"),
    "KV cache": ("allocator", "block_size"),
    "Speculative decoding": ("speculator", "spec_acceptance", "spec_draft_pass_overhead_s"),
    "Block diffusion": (),
}
"""The engine's options (not any policy's knob) shown in each section."""


def _config_sections() -> dict[str, tuple[str, ...]]:
    sections = dict(ENGINE_SECTIONS)
    for knob in KNOB_OPTIONS:
        title = KIND_SECTIONS.get(knob.kind)
        if title is not None:
            sections[title] += (knob.name,)
    return sections


CONFIG_SECTIONS = _config_sections()
COLLAPSED_SECTIONS = ("Replicas and router", "Speculative decoding", "Block diffusion", "Other")
"""Sections that start closed: their defaults (one replica, no speculation, autoregressive
decoding) rarely change."""
WORKLOAD_OPTIONS = ("trace", "trace_format", "arrivals", "max_requests", "window_start_s",
                    "window_end_s", "rate_scale", "seed", "horizon_s")
SLO_OPTIONS = ("slo_ttft_s", "slo_tpot_s")
SERVER_ONLY = ("calibration",)
"""Options the dashboard leaves at their defaults: files on the server."""

TRACE_SOURCES = ("bundled", "upload", "synthetic", "spec")
"""`spec` takes the CLI's generated-workload strings (`synthetic:...`, `sessions:...`), not paths."""
GENERATED_PREFIXES = ("synthetic:", "sessions:")
DEFAULT_SPEC = ("sessions:n=200,turns=4,system=512,user=lognormal:200:0.5,"
                "answer=lognormal:150:0.5,arrivals=poisson:1,think=20")


def other_options() -> tuple[str, ...]:
    placed = {n for names in CONFIG_SECTIONS.values() for n in names}
    placed.update(WORKLOAD_OPTIONS, SLO_OPTIONS, SERVER_ONLY)
    return tuple(n for n in ReplayOptions.names() if n not in placed)


def _type_parts(name: str) -> tuple[str, bool]:
    field = next(f for f in fields(ReplayOptions) if f.name == name)
    parts = [p.strip() for p in str(field.type).split("|")]
    return parts[0], "None" in parts


def option_widget(name: str, default: Any, key: str, container: Any = st) -> Any:
    """One option's widget; returns its value (None leaves an optional option at its default).
    A knob's declared widget and range apply; other options' widgets follow their types."""
    help_text = OPTION_HELP.get(name)
    knob = KNOBS.get(name)
    if name == "model":
        return model_widget(default, key, container)
    if name == "hardware":
        return hardware_widget(default, key, container)
    if name in CHOICES:
        choices = CHOICES[name]
        return container.selectbox(name, choices, index=choices.index(default), key=key,
                                   help=help_text,
                                   format_func=lambda v: "auto" if v is None else str(v))
    base, optional = _type_parts(name)
    widget = knob.widget if knob is not None else {
        "bool": "checkbox", "int": "number", "float": "number"}.get(base, "text")
    placeholder = "default" if optional else None
    if widget == "checkbox":
        return container.checkbox(name, value=default, key=key, help=help_text)
    if widget == "number":
        low = knob.low if knob is not None and knob.low is not None else 0
        high = knob.high if knob is not None else None
        if base == "int":
            return container.number_input(name, value=default, min_value=int(low),
                                          max_value=None if high is None else int(high), step=1,
                                          key=key, help=help_text, placeholder=placeholder)
        return container.number_input(name, value=default, min_value=float(low),
                                      max_value=None if high is None else float(high), step=0.1,
                                      format="%g", key=key, help=help_text,
                                      placeholder=placeholder)
    text = container.text_input(name, value=default or "", key=key, help=help_text)
    return text if text or not optional else None


def model_widget(default: str, key: str, container: Any = st) -> str:
    """The catalog drop-down, or an uploaded Hugging Face config.json in its place (stored as
    trace uploads are, and read at once so a bad file is an error here, under its own name)."""
    choices = CHOICES["model"]
    name = container.selectbox("model", choices, index=choices.index(default), key=key,
                               help="a catalog model (servesim list models)")
    uploaded = container.file_uploader(
        "or a Hugging Face config.json", type=["json"], key=f"{key}.config",
        help="its architecture (and quantization) replaces the drop-down's model")
    return _checked_upload(uploaded, model_from_hf_config, name, container)


def hardware_widget(default: str, key: str, container: Any = st) -> str:
    """The catalog drop-down, or an uploaded hardware spec file (YAML or JSON) in its place,
    read at once so a bad file is an error here, under its own name."""
    choices = CHOICES["hardware"]
    name = container.selectbox("hardware", choices, index=choices.index(default), key=key,
                               help="a catalog accelerator (servesim list hardware)")
    uploaded = container.file_uploader(
        "or a hardware spec file", type=["yaml", "yml", "json"], key=f"{key}.spec",
        help="any accelerator: `servesim list hardware --spec h100` writes one to edit")
    return _checked_upload(uploaded, load_hardware_spec, name, container)


def _checked_upload(uploaded: Any, read: Callable[[Path], object], fallback: str,
                    container: Any) -> str:
    """The stored path of `uploaded`, once `read` accepts it; `fallback` (the drop-down's
    choice) when nothing was uploaded or the file is bad, the error shown under its name."""
    if uploaded is None:
        return fallback
    path = None
    try:
        path = store_upload(uploaded.name, uploaded.getvalue(), MODEL_CONFIG_LIMIT_BYTES)
        read(path)
    except ValueError as exc:
        container.error(f"error: {user_message(exc, path, uploaded.name)}")
        return fallback
    return str(path)


def config_controls(prefix: str = "", defaults: ReplayOptions = DEFAULTS,
                    container: Any = st.sidebar, expanded: bool = True) -> dict[str, Any]:
    """Model, hardware, scheduler and KV widgets (plus any unplaced option), as option values."""
    values: dict[str, Any] = {}
    sections = dict(CONFIG_SECTIONS)
    if other_options():
        sections["Other"] = other_options()
    for title, names in sections.items():
        box = container.expander(title, expanded=expanded and title not in COLLAPSED_SECTIONS)
        for name in names:
            values[name] = option_widget(name, getattr(defaults, name), prefix + name, box)
    return values


def slo_and_price_controls(container: Any = st.sidebar) -> tuple[dict[str, Any], float]:
    """SLO option values, and the GPU-hour price for cost per million output tokens."""
    box = container.expander("SLOs and price", expanded=True)
    slos = {n: option_widget(n, getattr(DEFAULTS, n), n, box) for n in SLO_OPTIONS}
    price = box.number_input("GPU-hour price ($)", value=3.0, min_value=0.0, step=0.5,
                             format="%g", key="gpu_hour_price",
                             help="cost per million output tokens bills every GPU of the replica "
                                  "for the whole simulated span")
    return slos, price


@dataclass(frozen=True, slots=True)
class Workload:
    values: dict[str, Any]
    """Option values: trace, trace_format, arrivals, max_requests, rate_scale, seed, horizon_s."""
    upload_name: str | None = None
    """The uploaded file's own name, when the trace is an upload."""
    error: str | None = None


def workload_controls(container: Any = st.sidebar) -> Workload:
    """Trace source (bundled, uploaded or synthetic), rate scale, seed and horizon."""
    box = container.expander("Workload", expanded=True)
    source = box.radio("trace source", TRACE_SOURCES, key="trace_source", horizontal=True)
    values: dict[str, Any] = {}
    upload_name = error = None
    if source == "bundled":
        values["max_requests"] = option_widget("max_requests", DEFAULTS.max_requests,
                                               "max_requests", box)
    elif source == "upload":
        limit_mb = UPLOAD_LIMIT_BYTES // (1024 * 1024)
        uploaded = box.file_uploader(
            f"trace file or inference-perf config (at most {limit_mb} MB)",
            type=list(UPLOAD_TYPES), key="trace_upload",
            help="Azure, BurstGPT, Mooncake, Vidur, length-only or servesim CSV / JSON lines, or an "
                 "inference-perf config (YAML or JSON); parsed as text only")
        values["trace_format"] = option_widget("trace_format", None, "trace_format", box)
        values["arrivals"] = option_widget("arrivals", None, "arrivals", box)
        values["max_requests"] = option_widget("max_requests", DEFAULTS.max_requests,
                                               "upload_max_requests", box)
        if uploaded is None:
            error = "upload a trace file, or pick another trace source"
        else:
            upload_name = uploaded.name
            try:
                values["trace"] = trace_spec(store_upload(uploaded.name, uploaded.getvalue()))
            except UploadError as exc:
                error = str(exc)
    elif source == "spec":
        spec = box.text_input("workload spec", value=DEFAULT_SPEC, key="trace_spec",
                              help="as `servesim replay --trace`: synthetic:... or sessions:...")
        if not spec.strip().startswith(GENERATED_PREFIXES) or "file:" in spec:
            error = ("a workload spec starts with synthetic: or sessions: and names no file; "
                     "upload a trace file instead")
        values["trace"] = spec.strip()
    else:
        n = box.number_input("requests", value=500, min_value=1, max_value=200_000, step=100,
                             key="synthetic_n")
        arrivals = box.text_input("arrivals", value="poisson:4", key="synthetic_arrivals",
                                  help=ARRIVALS_SYNTAX)
        prompt = box.text_input("prompt lengths", value="lognormal:1024:0.8",
                                key="synthetic_prompt", help=LENGTHS_SYNTAX.replace(" or file:PATH", ""))
        output = box.text_input("output lengths", value="lognormal:256:0.8",
                                key="synthetic_output", help=LENGTHS_SYNTAX.replace(" or file:PATH", ""))
        if any(text.strip().startswith("file:") for text in (prompt, output)):
            error = "file: lengths read a file on the server; upload the trace instead"
        values["trace"] = f"synthetic:n={n},arrivals={arrivals},prompt={prompt},output={output}"
    for name in ("window_start_s", "window_end_s", "rate_scale", "seed", "horizon_s"):
        values[name] = option_widget(name, getattr(DEFAULTS, name), name, box)
    return Workload(values, upload_name, error)


def build_options(*parts: dict[str, Any]) -> ReplayOptions:
    """`ReplayOptions` from widget values; None keeps an option's CLI default."""
    merged: dict[str, Any] = {}
    for part in parts:
        merged.update(part)
    defaults = ReplayOptions()
    return defaults.updated({k: (getattr(defaults, k) if v is None else v) for k, v in merged.items()})
