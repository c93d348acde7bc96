#!/usr/bin/env bash
# The GPU readiness check, in one call on a CUDA machine (at most about 8 minutes):
#   1. installs what it needs: into .venv from the package index (the backend and test
#      extras), or with --offline WHEELS, on a machine with no index whose python3 already
#      has torch, triton, numpy, scipy, pytest and hypothesis, the wheels in WHEELS (simpy,
#      gguf) into a private folder used beside that python3;
#   2. runs the kernel, KV-cache and model tests with the Triton kernels compiled (not
#      interpreted) and the tensors on the GPU;
#   3. bench/kernel_tables_check.py (the shipped measured kernel tables against this card);
#   4. bench/kernel_bandwidth.py (the paged decode kernel against the card's copy bandwidth);
#   5. a profile + validate of the real backend on llama-3.2-1b with seeded weights (real
#      shapes: step times do not depend on the weights' values), simulator against real steps;
#   6. the rest of the real backend's tests on the GPU (bf16 where the CPU runs fp32).
# Everything it writes goes under $OUT (default out/gpu_check): one log per step and
# summary.txt with each step's status and seconds. A failed step is recorded and the next runs.
#
#   bash bench/gpu_check.sh [--dry-run] [--offline WHEELS]
#
# --dry-run prints the steps without running them (how CI checks this script without a GPU).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
WHEELS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --offline)
            if [ $# -lt 2 ] || [ -z "$2" ]; then
                echo "error: --offline needs the folder of wheels to install (usage: bash bench/gpu_check.sh [--dry-run] [--offline WHEELS])" >&2
                exit 2
            fi
            WHEELS="$2"; shift ;;
        *) echo "error: unknown argument '$1' (usage: bash bench/gpu_check.sh [--dry-run] [--offline WHEELS])" >&2; exit 2 ;;
    esac
    shift
done

OUT="${OUT:-out/gpu_check}"
if [ -n "$WHEELS" ]; then
    if [ "$DRY_RUN" = 0 ] && ! ls "$WHEELS"/*.whl > /dev/null 2>&1; then
        echo "error: --offline $WHEELS holds no .whl files" >&2
        exit 2
    fi
    SITE="${TMPDIR:-/tmp}/servesim-gpu-check-site"
    PY=python3
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    INSTALL="rm -rf $SITE && $PY -m pip install --quiet --no-index --no-deps --no-compile --target $SITE $WHEELS/*.whl && $PY -c 'import simpy, torch, triton, numpy, scipy, pytest, hypothesis'"
else
    PY=.venv/bin/python
    INSTALL="python3 -m venv .venv && $PY -m pip install --quiet --upgrade pip && $PY -m pip install --quiet -e '.[dev,backend]'"
fi
# Small enough to finish in a minute on one GPU, large enough to batch.
VALIDATE_TRACE="synthetic:n=60,arrivals=poisson:8,prompt=lognormal:256:0.6,output=fixed:64"
GPU_TESTS="tests/real/test_kernels.py tests/real/test_kv_cache.py tests/real/test_model.py tests/real/test_torch_paged.py"

STEPS=(
    "install|$INSTALL"
    "cuda|$PY -c 'import torch, triton; assert torch.cuda.is_available(), \"no CUDA device\"; print(torch.__version__, torch.version.cuda, triton.__version__, torch.cuda.get_device_name(0))'"
    "kernel_tests|env -u TRITON_INTERPRET $PY -m pytest $GPU_TESTS -q -p no:cacheprovider --junitxml=$OUT/kernel_tests.xml"
    "kernel_tables|$PY bench/kernel_tables_check.py --out $OUT/kernel_tables.json"
    "kernel_bandwidth|$PY bench/kernel_bandwidth.py --out $OUT/kernel_bandwidth.json"
    "validate_llama_1b|$PY -m sim.cli validate --model llama-3.2-1b --trace '$VALIDATE_TRACE' --repeats 1 --out $OUT/validate_llama_1b"
    "real_tests|env -u TRITON_INTERPRET $PY -m pytest tests/real -v --tb=line -p no:cacheprovider $(printf -- '--ignore=%s ' $GPU_TESTS)--junitxml=$OUT/real_tests.xml"
)
LIMITS_S=(45 15 90 90 30 150 60)

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
    if [ "$name" = install ] && [ "$status" != 0 ]; then
        echo "install failed: the other steps are skipped" | tee -a "$OUT/summary.txt"
        exit 1
    fi
    if [ "$name" = cuda ] && [ "$status" != 0 ]; then
        echo "no CUDA device: the GPU steps are skipped" | tee -a "$OUT/summary.txt"
        exit 1
    fi
done
exit "$failed"
