"""inference-perf (kubernetes-sigs/inference-perf) workload configs as servesim traces.

`--trace inference-perf:PATH` reads the config's `data` and `load` sections (`schema`), draws
the prompts its data generator would send (`prompts`) and the stages' send times
(`workload`, whose `load_inference_perf` is the entry point); docs/workloads.md describes what
is modelled and how. The package itself holds only the prefix, so telling such a trace from a
file costs a replay nothing: the reader loads when the trace is one.
"""

TRACE_PREFIX = "inference-perf:"
