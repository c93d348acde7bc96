"""One type and range check for every option, whichever way it arrives: CLI flag, TOML config,
sweep grid or the dashboard's `build_options` (all end in `ReplayOptions`)."""

from __future__ import annotations

import sys
from dataclasses import fields

import pytest

from sim.cli import main
from sim.config import ReplayOptions
from sim.option_check import BOUNDS, check_option, parse_type
from sim.sweep.grid import expand_grid

tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")

BAD_TOML_VALUES = [
    ('rate_scale = "fast"', "--rate-scale must be a number, got 'fast'"),
    ('tp = "2"', "--tp must be an integer, got '2'"),
    ("replicas = 1.5", "--replicas must be an integer, got 1.5"),
    ('block_size = "16"', "--block-size must be an integer"),
    ("model = 5", "--model must be a string, got 5"),
    ('horizon_s = "10"', "--horizon-s must be a number"),
    ('scheduler = ["chunked", "static"]', "--scheduler must be a string, got ['chunked', 'static']"),
    ("fast_forward = 1", "--fast-forward must be true or false"),
    ("seed = true", "--seed must be an integer, got True"),
    ("max_num_seqs = [8]", "--max-num-seqs must be an integer"),
]


@pytest.mark.parametrize("line,message", BAD_TOML_VALUES)
def test_a_mistyped_config_value_is_a_one_line_error(tmp_path, capsys, line, message):
    config = tmp_path / "run.toml"
    config.write_text(line + "\n")
    assert main(["replay", "--quiet", "--max-requests", "5", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    key = line.split(" = ")[0]
    assert f"option {key}" in err


@pytest.mark.parametrize("line,message", BAD_TOML_VALUES)
def test_a_mistyped_grid_value_fails_the_sweep_up_front(line, message):
    grid = tomllib.loads(line)
    key, value = next(iter(grid.items()))
    if isinstance(value, list):  # a grid list is swept: sweep the bad list as one value
        grid[key] = [value]
    grid["trace"] = "synthetic:n=5,arrivals=poisson:5,prompt=uniform:5:10,output=uniform:2:4"
    with pytest.raises(ValueError, match=f"option {key}"):
        expand_grid(grid)


@pytest.mark.parametrize("argv,message", [
    (["--block-size", "0"], "--block-size must be >= 1, got 0"),
    (["--token-budget", "0"], "--token-budget must be >= 1, got 0"),
    (["--max-num-batched-tokens", "0"], "--max-num-batched-tokens must be >= 1, got 0"),
    (["--max-model-len", "0"], "--max-model-len must be >= 1, got 0"),
    (["--horizon-s", "-5"], "--horizon-s must be > 0, got -5.0"),
    (["--slo-ttft-s", "-1"], "--slo-ttft-s must be > 0, got -1.0"),
    (["--slo-tpot-s", "0"], "--slo-tpot-s must be > 0"),
    (["--seed", "-3"], "--seed must be >= 0"),
    (["--rate-scale", "-2"], "--rate-scale must be > 0"),
    (["--tp", "0"], "--tp must be >= 1"),
    (["--max-num-seqs", "0"], "--max-num-seqs must be >= 1"),
    (["--window-start-s", "-1"], "--window-start-s must be >= 0"),
    (["--top-p", "0"], "--top-p must lie in (0, 1]"),
    # a blank name or path read as "not given": the run went on without it
    (["--calibration="], "--calibration must not be empty"),
    (["--arrivals", " "], "--arrivals must not be empty"),
    (["--speed-trace="], "--speed-trace must not be empty"),
    (["--config="], "the config file's path is blank"),
    (["--config", " "], "the config file's path is blank"),
])
def test_an_out_of_range_flag_is_a_one_line_error(capsys, argv, message):
    assert main(["replay", "--quiet", "--max-requests", "5", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_blank_trace_is_the_bundled_one():
    """`trace`'s documented default is the empty string (the bundled trace)."""
    assert ReplayOptions().updated({"trace": ""}).trace == ""
    with pytest.raises(ValueError, match="--model must not be empty"):
        ReplayOptions().updated({"model": ""})


def test_integral_floats_become_ints_and_ints_become_floats():
    options = ReplayOptions().updated({"tp": 2.0, "rate_scale": 2, "horizon_s": 10})
    assert options.tp == 2 and type(options.tp) is int
    assert options.rate_scale == 2.0 and type(options.rate_scale) is float
    assert type(options.horizon_s) is float


def test_none_is_accepted_only_where_the_field_allows_it():
    assert ReplayOptions().updated({"horizon_s": None}).horizon_s is None
    with pytest.raises(ValueError, match="--tp must be an integer, got None"):
        ReplayOptions().updated({"tp": None})


def test_every_field_has_a_checkable_type_and_every_bound_names_a_field():
    names = {f.name for f in fields(ReplayOptions)}
    for f in fields(ReplayOptions):
        parse_type(f.type)
        assert check_option(f.name, f.default, f.type) == f.default
    assert set(BOUNDS) <= names


def test_the_dashboard_gets_the_same_check():
    controls = pytest.importorskip("ui.controls")
    with pytest.raises(ValueError, match="--block-size must be >= 1"):
        controls.build_options({"block_size": 0})
    with pytest.raises(ValueError, match="--replicas must be an integer"):
        controls.build_options({"replicas": "2"})


@pytest.mark.parametrize("argv,message", [
    (["replay", "--tp", "2.5"], "error: servesim replay: argument --tp: invalid int value: '2.5'"),
    (["replay", "--bogus"], "error: servesim: unrecognized arguments: --bogus"),
    (["list", "nothing"], "error: servesim list: argument what: invalid choice: 'nothing'"),
])
def test_a_flag_argparse_cannot_read_is_a_one_line_error(capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
