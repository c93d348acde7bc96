"""Knobs declared once, on a policy's params: the CLI, TOML files, sweep grids and the
dashboard all find a knob from its declaration alone.

The toy policy (tests/toy_policy.py) is registered in a fresh interpreter before `sim` is
imported, as a policy in the source is: the run options are generated from the registry when
`sim` first reads it. The interpreter ends with the test, and the registration with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from policies.knobs import Bound, check_knobs, collect_knobs, knob, params_from_options
from policies.registry import SCHEDULERS, TABLES, PolicyEntry
from policies.scheduler.static import StaticParams
from sim.option_help import OPTION_HELP
from sim.config import ReplayOptions
from sim.policy_knobs import KNOB_OPTIONS, KNOBS, declarations

ROOT = Path(__file__).resolve().parents[1]
TRACE = "synthetic:n=40,arrivals=poisson:50,prompt=uniform:20:60,output=uniform:20:40"


def run_with_toy(script: str) -> dict:
    """Run `script` after registering the toy policy in a fresh interpreter; its printed
    JSON."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
    prelude = "import toy_policy\ntoy_policy.register()\n"
    done = subprocess.run([sys.executable, "-c", prelude + script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


CLI_TOML_GRID = f"""
import contextlib, io, json, tempfile
from pathlib import Path
from sim.cli import build_parser, main, replay_options
from sim.config import ReplayOptions, options_from_toml
from sim.sweep.grid import expand_grid

found = {{}}
help_out = io.StringIO()
with contextlib.redirect_stdout(help_out):
    try:
        main(["replay", "--help"])
    except SystemExit:
        pass
found["help"] = help_out.getvalue()
args = build_parser().parse_args(["replay", "--scheduler", "toy", "--toy-max-batch", "3"])
found["parsed"] = replay_options(args).toy_max_batch
found["default"] = ReplayOptions().toy_max_batch
out = Path(tempfile.mkdtemp())
with contextlib.redirect_stdout(io.StringIO()):
    found["run_status"] = main(["replay", "--quiet", "--trace", "{TRACE}", "--scheduler", "toy",
                                "--toy-max-batch", "2", "--out", str(out)])
rows = (out / "iterations.csv").read_text().splitlines()
column = rows[0].split(",").index("batch_size")
found["max_batch"] = max(int(row.split(",")[column]) for row in rows[1:])
config = out / "run.toml"
config.write_text('scheduler = "toy"\\ntoy_max_batch = 5\\n')
found["toml"] = ReplayOptions().updated(options_from_toml(config)).toy_max_batch
config.write_text('toy_max_batch = 0\\n')
err = io.StringIO()
with contextlib.redirect_stderr(err):
    found["bad_toml_status"] = main(["replay", "--quiet", "--config", str(config)])
found["bad_toml"] = err.getvalue()
cells = expand_grid({{"scheduler": "toy", "toy_max_batch": [1, 4], "trace": "{TRACE}"}})
found["grid"] = [cell.values["toy_max_batch"] for cell in cells]
try:
    expand_grid({{"toy_max_batch": ["many"]}})
except ValueError as exc:
    found["bad_grid"] = str(exc)
print(json.dumps(found))
"""


def test_a_toy_policys_knob_is_a_flag_a_toml_key_and_a_grid_key():
    found = run_with_toy(CLI_TOML_GRID)
    assert "--toy-max-batch TOY_MAX_BATCH" in found["help"]
    assert "toy: most sequences in one iteration (default: 8)" in " ".join(found["help"].split())
    assert found["parsed"] == 3 and found["default"] == 8
    assert found["run_status"] == 0 and found["max_batch"] == 2  # the policy got the value
    assert found["toml"] == 5
    assert found["bad_toml_status"] == 2
    assert found["bad_toml"] == ("error: --toy-max-batch must be >= 1, got 0 "
                                 "(option toy_max_batch)\n")
    assert found["grid"] == [1, 4]
    assert "--toy-max-batch must be an integer, got 'many'" in found["bad_grid"]


DASHBOARD = """
import json
from streamlit.testing.v1 import AppTest
from ui import controls

found = {"section": controls.CONFIG_SECTIONS["Scheduler"],
         "choices": list(controls.CHOICES["scheduler"])}
at = AppTest.from_file("ui/app.py", default_timeout=120)
at.run()
at.sidebar.selectbox(key="scheduler").set_value("toy").run()
widget = at.sidebar.number_input(key="toy_max_batch")
found["widget"] = {"label": widget.label, "value": widget.value, "min": widget.min,
                   "help": widget.help}
cards = {}
for value in (8, 1):
    widget.set_value(value).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    cards[value] = {m.label: m.value for m in at.metric}
found["ttft_p99"] = [cards[8]["TTFT P99 (s)"], cards[1]["TTFT P99 (s)"]]
print(json.dumps(found))
"""


def test_a_toy_policys_knob_is_a_dashboard_control():
    pytest.importorskip("streamlit", reason="the dashboard tests need the ui extra")
    found = run_with_toy(DASHBOARD)
    assert "toy" in found["choices"]
    assert "toy_max_batch" in found["section"]
    assert found["widget"] == {"label": "toy_max_batch", "value": 8, "min": 1,
                               "help": "toy: most sequences in one iteration"}
    before, capped = found["ttft_p99"]
    assert float(capped) > float(before)  # one sequence at a time queues the rest


def test_the_toy_knob_is_collected_from_a_temporary_registry_entry(monkeypatch):
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        import toy_policy
    finally:
        sys.path.remove(str(ROOT / "tests"))
    monkeypatch.setitem(SCHEDULERS, "toy", PolicyEntry("toy", toy_policy.ToyScheduler,
                                                       toy_policy.ToyParams, "toy"))
    knob_of_toy, kind, policies = declarations()["toy_max_batch"]
    assert (knob_of_toy.flag, kind, policies) == ("--toy-max-batch", "schedulers", ("toy",))
    assert declarations()["max_num_seqs"][2] == ("static", "continuous", "orca", "chunked",
                                                 "toy")
    assert toy_policy.ToyParams().max_batch == 8
    params = SCHEDULERS["toy"].make_params({"toy_max_batch": 3, "max_num_seqs": 5})
    assert (params.max_batch, params.max_num_seqs) == (3, 5)


def test_every_knob_is_an_option_with_help_and_the_option_s_type_and_default():
    fields = {f.name: f for f in dataclasses.fields(ReplayOptions)}
    for name, declared in KNOBS.items():
        assert fields[name].type == declared.option_type
        assert fields[name].default == declared.option_default
        assert OPTION_HELP[name] == declared.knob.help
    assert [k.name for k in KNOB_OPTIONS] == list(KNOBS)
    assert {k.kind for k in KNOB_OPTIONS} <= set(TABLES) | {"decoding"}


def test_a_renamed_knob_is_filled_from_its_option():
    assert StaticParams().max_wait_s == 0.0
    params = params_from_options(StaticParams, {"static_max_wait_s": 2.5, "max_wait_s": 9.0})
    assert params.max_wait_s == 2.5  # the option's name, not the field's
    assert KNOBS["static_max_wait_s"].field_name == "max_wait_s"


def test_a_params_class_checks_its_knobs_with_the_options_message():
    with pytest.raises(ValueError, match=r"^--static-max-wait-s must be >= 0, got -1 "
                                         r"\(option static_max_wait_s\)$"):
        StaticParams(max_wait_s=-1)
    with pytest.raises(ValueError, match=r"^unknown chunked order 'sideways'; --chunked-order "
                                         r"takes one of: decode-first, prefill-first"):
        ReplayOptions(chunked_order="sideways")


def test_the_unset_token_budget_follows_the_engine_budget():
    from sim.config import resolve

    def budget(**values) -> int:
        options = ReplayOptions(scheduler="chunked", trace=TRACE, **values)
        return SCHEDULERS["chunked"].make_params(resolve(options).policy_options).token_budget

    assert budget() == 2048
    assert budget(max_num_batched_tokens=700) == 700
    assert budget(max_num_batched_tokens=700, token_budget=300) == 300
    diffusion = ReplayOptions(scheduler="chunked", trace=TRACE, decoding="block-diffusion",
                              diffusion_block=4096, diffusion_steps=8)
    with pytest.raises(ValueError, match="exceeds --token-budget 2048"):
        resolve(diffusion)


def test_a_knob_declared_twice_differently_is_a_programming_error():
    @dataclasses.dataclass(frozen=True)
    class First:
        width: int = knob(2, min=1, help="width")

    @dataclasses.dataclass(frozen=True)
    class Second:
        width: int = knob(3, min=1, help="width")

    @dataclasses.dataclass(frozen=True)
    class Same:
        width: int = knob(2, min=1, help="width")

    assert list(collect_knobs([First, Same])) == ["width"]
    with pytest.raises(TypeError, match="option 'width' is declared differently by Second"):
        collect_knobs([First, Second])


def test_knob_declarations_are_checked():
    with pytest.raises(TypeError, match="--lower-case-with-dashes"):
        knob(1, help="x", flag="toy_max")
    with pytest.raises(TypeError, match="widget"):
        knob(1, help="x", widget="dial")

    @dataclasses.dataclass(frozen=True)
    class Ranged:
        share: float = knob(0.5, min=0.0, max=1.0, help="a share")

    check_knobs(Ranged(1.0))
    with pytest.raises(ValueError, match=r"--share must lie in \[0, 1\], got 1.5"):
        check_knobs(Ranged(1.5))
    assert Bound(0.0, high=1.0).describe() == "must lie in [0, 1]"
