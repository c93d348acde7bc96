"""The real backend runs dense Llama-style models: gpt-oss (MoE, biases, sinks, mxfp4) is
refused in one line, by catalog name and by config file alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.cli import main

TRACE = "synthetic:n=2,arrivals=poisson:50,prompt=uniform:4:40,output=fixed:4"
CONFIG = Path(__file__).parent.parent / "data" / "hf_configs" / "gpt-oss-20b"


@pytest.mark.parametrize("model", ["gpt-oss-20b", str(CONFIG)])
def test_gpt_oss_is_refused_in_one_line(model, tmp_path, capsys):
    code = main(["replay", "--quiet", "--executor", "real", "--model", model, "--trace", TRACE,
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and err.count("\n") == 1
    assert "mixture of experts" in err
