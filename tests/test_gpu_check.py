"""bench/gpu_check.sh runs only on a CUDA machine; here it is checked for syntax, and its dry
run must name every step the GPU check promises, write nothing, and refuse bad arguments."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"


def _run(*args: str, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          env={**os.environ, "OUT": str(out)}, timeout=60)


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def test_dry_run_lists_every_step_and_writes_nothing(tmp_path):
    out = tmp_path / "gpu"
    result = _run("--dry-run", out=out)
    assert result.returncode == 0, result.stderr
    steps = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("step ")]
    assert steps == ["install", "cuda", "kernel_tests", "kernel_tables", "kernel_bandwidth",
                     "validate_llama_1b", "real_tests"]
    text = result.stdout
    assert "env -u TRITON_INTERPRET" in text  # kernels compiled, not interpreted
    assert "bench/kernel_bandwidth.py --out " + str(out) in text
    assert "bench/kernel_tables_check.py --out " + str(out) in text
    assert "validate --model llama-3.2-1b" in text
    assert ".venv/bin/python -m pip install --quiet -e '.[dev,backend]'" in text
    limits = [int(line.split("(limit ")[1].split()[0]) for line in text.splitlines()
              if line.startswith("step ")]
    assert sum(limits) <= 8 * 60  # the whole check fits in the 8 minutes it promises
    assert not out.exists()


def test_offline_dry_run_installs_the_given_wheels_without_an_index(tmp_path):
    result = _run("--dry-run", "--offline", "wheels", out=tmp_path / "gpu")
    assert result.returncode == 0, result.stderr
    install = next(line for line in result.stdout.splitlines() if line.startswith("step install"))
    assert "--no-index" in install and "wheels/*.whl" in install and ".venv" not in install
    assert "python3 -m sim.cli validate" in result.stdout


def test_offline_without_wheels_is_a_one_line_error(tmp_path):
    for args in (("--offline",), ("--offline", str(tmp_path))):
        result = _run(*args, out=tmp_path / "gpu")
        assert result.returncode == 2
        assert result.stderr.startswith("error: --offline") and result.stderr.count("\n") == 1


def test_unknown_argument_is_a_one_line_error(tmp_path):
    result = _run("--fast", out=tmp_path / "gpu")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown argument '--fast'")
    assert result.stderr.count("\n") == 1
