"""A feature whose extra is not installed says what to run from the checkout, not a traceback
and not `pip install 'servesim[...]'` (servesim is on no package index)."""

from __future__ import annotations

import sys

import pytest

from sim.cli import main
from sim.extras import EXTRA_MODULES


def hide(monkeypatch, *modules: str) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)  # find_spec and import now fail


def test_real_executor_without_the_backend_extra(monkeypatch, capsys):
    hide(monkeypatch, "torch")
    assert main(["replay", "--quiet", "--executor", "real", "--model", "smollm2-135m",
                 "--max-requests", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --executor real") and err.count("\n") == 1
    assert "torch missing" in err and "pip install -e '.[backend]'" in err
    assert "servesim[" not in err


def test_profile_without_the_backend_extra(monkeypatch, capsys):
    hide(monkeypatch, "torch")
    assert main(["profile", "--executor", "real", "--model", "smollm2-135m",
                 "--out", "unused.json"]) == 2
    assert "pip install -e '.[backend]'" in capsys.readouterr().err


def test_ui_without_the_ui_extra(monkeypatch, capsys):
    hide(monkeypatch, "streamlit")
    assert main(["ui"]) == 2
    err = capsys.readouterr().err
    assert "streamlit missing" in err and ".venv/bin/pip install -e '.[ui]'" in err
    assert "servesim[" not in err


def test_every_extra_named_exists_in_pyproject():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert set(EXTRA_MODULES) <= set(pyproject["project"]["optional-dependencies"])
