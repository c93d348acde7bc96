"""inference-perf (kubernetes-sigs/inference-perf) workload configs as servesim traces.

`--trace inference-perf:PATH` reads the config's `data` and `load` sections (`schema`), draws
the prompts its data generator would send (`prompts`) and the stages' send times
(`workload`); docs/workloads.md describes what is modelled and how.
"""

from traces.inference_perf.workload import (DEFAULT_PROMPT_INFLATION, SYNTHETIC_PROMPT_INFLATION,
                                            load_inference_perf)

TRACE_PREFIX = "inference-perf:"

__all__ = ["DEFAULT_PROMPT_INFLATION", "SYNTHETIC_PROMPT_INFLATION", "TRACE_PREFIX",
           "load_inference_perf"]
