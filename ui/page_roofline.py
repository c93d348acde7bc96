"""Roofline: where decode, block-diffusion denoising and prefill sit against the ridge point,
as `servesim roofline`."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from sim.public import (CostModel, default_coefficients, get_hardware, get_model,
                        intensity_curve, intensity_table)
from ui import charts, controls


def render() -> None:
    columns = st.columns(4)
    values = {name: controls.option_widget(name, getattr(controls.DEFAULTS, name), f"roof.{name}",
                                           column)
              for name, column in zip(("model", "hardware", "weight_dtype", "kv_dtype"), columns)}
    columns = st.columns(5)
    tp = columns[0].number_input("tp", value=1, min_value=1, step=1, key="roof.tp")
    batch = columns[1].number_input("batch", value=1, min_value=1, max_value=4096, step=1,
                                    key="roof.batch")
    context = columns[2].number_input("context", value=1024, min_value=1, step=256,
                                      key="roof.context")
    spec = columns[3].number_input("spec tokens (k)", value=0, min_value=0, max_value=16, step=1,
                                   key="roof.spec", help="draft tokens verified per decode step")
    block = columns[4].number_input("diffusion block", value=32, min_value=0, max_value=1024,
                                    step=8, key="roof.block",
                                    help="positions a block-diffusion denoising step computes "
                                         "per sequence (0: none)")
    try:
        hardware = get_hardware(values["hardware"])
        cost = CostModel(get_model(values["model"]), hardware,
                         default_coefficients(hardware.coefficients_name), tp=tp,
                         weight_dtype=values["weight_dtype"], kv_dtype=values["kv_dtype"])
        rows = intensity_table(cost, batch, context, spec, block)
    except ValueError as exc:
        st.error(f"error: {exc}")
        return
    ridge = hardware.ridge_point_flops_per_byte
    st.caption(f"Ridge point of {hardware.name}: {ridge:.0f} FLOP/byte (bf16 peak / memory "
               f"bandwidth). Below it an op group is memory-bound. Same numbers: `servesim "
               f"roofline --model {values['model']} --hardware {hardware.name} --batch {batch} "
               f"--context {context}" + (f" --spec-tokens {spec}" if spec else "")
               + f" --diffusion-block {block}`")
    curve = charts.intensity_points(intensity_curve(cost, context, spec, block))
    curve["label"] = [f"prefill {t} tokens" if p == "prefill" else f"{p} batch {n}"
                      for p, n, t in zip(curve["phase"], curve["num_seqs"], curve["new_tokens"])]
    st.altair_chart(charts.roofline(curve, hardware.peak_flops["bf16"],
                                    hardware.mem_bandwidth_bytes_s,
                                    "Decode and block-diffusion denoising over batch size, "
                                    "prefill over prompt length",
                                    color="phase"), width="stretch")
    table = pd.DataFrame([{
        "phase": r.phase, "group": r.group, "seqs": r.num_seqs, "new tokens/seq": r.new_tokens,
        "context": r.context_tokens, "GFLOP": r.flops / 1e9, "MB moved": r.bytes_moved / 1e6,
        "FLOP/byte": r.intensity_flops_per_byte, "time (ms)": r.time_s * 1e3,
        "TFLOP/s": r.achieved_flops_s / 1e12, "bound": "memory" if r.memory_bound else "compute",
    } for r in rows])
    st.dataframe(table, hide_index=True)
