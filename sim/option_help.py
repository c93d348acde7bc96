"""Each replay option's one-line help, shared by the CLI's flags and the dashboard's tooltips.

The engine's options are written here; the policy knobs' help comes from their declarations
(`policies.knobs`), so a new knob needs no line here.
"""

from __future__ import annotations

from sim.policy_knobs import KNOB_OPTIONS

OPTION_HELP = {
    "trace": "trace file (format detected), synthetic:n=N,arrivals=poisson:R,prompt=...,output=...,"
             " or inference-perf:CONFIG.yaml; default: the bundled Azure conv slice",
    "trace_format": "force the trace format",
    "arrivals": "arrival process for length-only traces: poisson:RATE or gamma:RATE:CV",
    "max_requests": "keep only the first N trace rows",
    "window_start_s": "replay only requests arriving at or after this trace time (re-offset to 0)",
    "window_end_s": "replay only requests arriving before this trace time",
    "rate_scale": "replay at X times the trace's request rate",
    "prompt_inflation": "inference-perf traces: server prompt tokens per token the client drew"
                        " (default 1.046, fitted to recorded vLLM runs; 1 for synthetic data)",
    "model": "model name (servesim list models), or a Hugging Face config.json (or the"
             " directory holding it)",
    "hardware": "hardware name (servesim list hardware), or a hardware spec file (YAML or JSON;"
                " servesim list hardware --spec NAME writes one)",
    "tp": "tensor parallel degree",
    "pp": "pipeline parallel degree (stages; the batch runs as pp micro-batches)",
    "replicas": "identical replicas behind the router",
    "router": "router across replicas (servesim list routers)",
    "disaggregate": "P:D prefill replicas feeding decode replicas (Splitwise/DistServe)",
    "kv_link_bandwidth_gb_s": "disaggregation: prefill-to-decode link per device, GB/s",
    "kv_link_latency_s": "disaggregation: KV transfer latency",
    "scheduler": "scheduler (servesim list schedulers)",
    "allocator": "KV allocator (servesim list allocators)",
    "max_num_batched_tokens": "token budget per iteration (default max(max_model_len, 2048))",
    "n": "parallel samples per request, sharing the prompt's KV (copy-on-write)",
    "beam_width": "beam search width: beams share KV, losers become copies of leaders",
    "beam_churn": "beam search: chance per step that a beam is replaced by another's copy",
    "length_penalty": "real beam search: rank answers by sum_logprob / length ** this",
    "priority_mix": ("shares of priority classes 0, 1, ... drawn per request, e.g. 0.2,0.8 "
                     "(scaled to sum to 1)"),
    "block_size": "KV block size in tokens",
    "gpu_memory_utilization": "share of device memory the engine may use",
    "num_gpu_blocks": "KV pool size in blocks per replica, overriding the memory model",
    "swap_space_gb": "host memory per device for swapped KV, GiB",
    "max_model_len": "context limit (default: the model's)",
    "weight_dtype": "every weight at this dtype: bf16|fp16|fp8|int8|int4 (default: the"
                    " model's own, from its config.json; catalog models bf16)",
    "kv_dtype": "KV cache dtype",
    "calibration": "coefficients JSON from servesim calibrate, or shared-fit (fits to the"
                   " shared A100/H100 profiles)",
    "cost_model": "auto: measured where the hardware has kernel tables and no roofline-only "
                  "option (--pp > 1, --calibration, --speed-trace, --executor real) is set, "
                  "else roofline; roofline: FLOPs and bytes against datasheet peaks; measured: "
                  "kernel latencies measured inside vLLM (a100, h100, h200, l40s, b200), "
                  "interpolated",
    "speed_trace": "a real run's measured machine speed (speed.csv from servesim validate): "
                   "scale each step's overhead and roofline terms by the machine's speed "
                   "factors at its start",
    "seed": "seed for synthetic arrivals and lengths",
    "horizon_s": "stop the simulation at this simulated time",
    "slo_ttft_s": "TTFT SLO for goodput",
    "slo_tpot_s": "TPOT SLO for goodput",
    "speculator": "speculative decoding: none|draft|tree|ngram|cascade|lookahead (servesim list speculators)",
    "spec_acceptance": "acceptance model: an i.i.d. rate (0.7: each draft is accepted with"
                       " probability 0.7 given every draft before it was; summary key"
                       " spec_conditional_acceptance_rate), per-position conditional rates"
                       " (0.54,0.36,0.26), beta:MEAN:CONC per request, or a file of accepted"
                       " counts; default 0.7. Not spec_acceptance_rate, which counts drafts"
                       " after a rejection as rejected (0.7 at k=4: 0.443)",
    "spec_draft_pass_overhead_s": "extra CPU overhead per non-fused draft pass",
    "pace": "trace: arrivals at trace times; asap: all at 0 s in trace order",
    "async_scheduling": "auto|on|off: plan each step while the one before runs, as vLLM does "
                        "since 0.14, so an arrival first runs in the step after next (auto: on "
                        "with the measured vLLM cost model, else off)",
    "measured_coefficients": "the measured model's engine coefficients, a JSON file as "
                             "`servesim calibrate --recorded` writes it (default: the shipped "
                             "fit)",
    "fast_forward": "jump runs of decode-only iterations in one event (same results, faster; "
                    "--no-fast-forward steps every iteration)",
    "executor": "sim: the cost model; real: run the model on tensors (torch) in wall-clock time",
    "weights": "real executor: local Hugging Face safetensors directory for --model",
    "temperature": "real executor: sampling temperature (0 = greedy)",
    "top_k": "real executor: top-k filter (0 = off)",
    "top_p": "real executor: nucleus filter (1 = off)",
    **{knob.name: knob.help for knob in KNOB_OPTIONS},
}
"""Each option's help: the engine's options here, the policy knobs' from their declarations."""
