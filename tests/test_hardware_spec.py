"""Hardware spec files (`--hardware FILE`), `servesim list hardware --spec NAME`, the datasheet
GPUs of the catalog, aliases in the listings, and a spec's price behind `--gpu-price`."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sim.cli import main
from sim.config import ReplayOptions, resolve
from sim.cost.catalog import HARDWARE, HARDWARE_ALIASES, MODEL_ALIASES, get_hardware
from sim.cost.hardware_spec import hardware_to_yaml, load_hardware_spec
from sim.cost.kernel_tables import shipped_hardware

TRACE = "synthetic:n=40,arrivals=poisson:8,prompt=fixed:300,output=fixed:20"

H100_FIELDS = {
    "name": "my-h100", "peak_flops": {"bf16": 9.89e14, "fp8": 1.979e15},
    "mem_capacity_bytes": 8e10, "mem_bandwidth_bytes_s": 3.35e12,
    "interconnect_bandwidth_bytes_s": 4.5e11, "host_link_bandwidth_bytes_s": 6.4e10,
}


def spec_file(tmp_path, catalog_name: str, **changes) -> str:
    """The spec `list hardware --spec catalog_name` prints, written to a file with `changes`
    replacing whole lines (`key: value`)."""
    text = hardware_to_yaml(get_hardware(catalog_name))
    lines = text.splitlines()
    for key, value in changes.items():
        lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in lines]
    path = tmp_path / f"{catalog_name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("name", list(HARDWARE))
def test_every_catalog_spec_reads_back_to_the_same_numbers(name, tmp_path, capsys):
    assert main(["list", "hardware", "--spec", name]) == 0
    path = tmp_path / "spec.yaml"
    path.write_text(capsys.readouterr().out)
    loaded = get_hardware(str(path))
    catalog = HARDWARE[name]
    assert loaded.coefficients_name == catalog.coefficients_name == name
    assert dataclasses.replace(loaded, coefficients=None) == catalog


def _summary(tmp_path, hardware: str, out: str, *extra: str) -> dict:
    assert main(["replay", "--quiet", "--trace", TRACE, "--model", "llama-3-8b", "--hardware",
                 hardware, "--out", str(tmp_path / out), *extra]) == 0
    return json.loads((tmp_path / out / "summary.json").read_text())


@pytest.mark.parametrize("name", ["h100", "l4"])
def test_a_renamed_catalog_spec_replays_exactly_as_its_name(name, tmp_path):
    """h100 is priced by its measured kernel tables, l4 by the roofline; a copy of either under
    another name must give the same summary.json (its kernel_tables and coefficients keys carry
    the lookups keyed by name), the hardware name in the cost model's description aside."""
    path = spec_file(tmp_path, name, name='"my-gpu"', description='"my own GPU"')
    by_name = _summary(tmp_path, name, "by_name")
    by_file = _summary(tmp_path, path, "by_file")
    assert by_name["requests_finished"] == 40 and by_name["ttft_p50_s"] > 0
    assert by_file["cost_model_choice"].startswith("auto: measured" if name == "h100"
                                                   else "auto: roofline")
    for key in ("cost_model", "cost_model_choice"):
        assert by_file.pop(key) == by_name.pop(key).replace(f" {name};", " my-gpu;").replace(
            f"/{name}", "/my-gpu")
    assert by_file == by_name


def test_a_spec_without_kernel_tables_is_priced_by_the_roofline(tmp_path):
    path = spec_file(tmp_path, "h100", kernel_tables="null")
    config = resolve(ReplayOptions(max_requests=5, hardware=path))
    assert config.cost_model_choice.startswith("auto: roofline (no measured kernel tables")
    with pytest.raises(ValueError, match="no measured kernel tables for hardware 'h100'"):
        resolve(ReplayOptions(max_requests=5, hardware=path, cost_model="measured"))


def test_json_spec_and_numeric_text(tmp_path):
    """JSON reads as YAML does; YAML 1.1 reads `3.35e12` (no dot) as text, which is accepted."""
    json_path = tmp_path / "gpu.json"
    json_path.write_text(json.dumps({**H100_FIELDS, "price_per_hour": 2.5}))
    spec = get_hardware(str(json_path))
    assert spec.name == "my-h100" and spec.description == "my-h100"
    assert spec.compute_peak("fp8") == 1.979e15 and spec.compute_peak("int8") == 9.89e14
    assert spec.price_per_hour == 2.5 and spec.kernel_tables is None
    assert spec.interconnect_latency_s == 5e-6 and spec.coefficients_name == "my-h100"
    yaml_path = tmp_path / "gpu.yaml"
    yaml_path.write_text("name: x\npeak_flops: {bf16: 1e15}\nmem_capacity_bytes: 8e10\n"
                         "mem_bandwidth_bytes_s: 3.35e12\ninterconnect_bandwidth_bytes_s: 4.5e11\n"
                         "host_link_bandwidth_bytes_s: 64e9\n")
    spec = load_hardware_spec(yaml_path)
    assert spec.peak_flops == {"bf16": 1e15} and spec.mem_bandwidth_bytes_s == 3.35e12


BAD_SPECS = [
    ("bad.yaml", "name: [unclosed\n", "not valid YAML"),
    ("bad.json", '{"name": "x",', "not valid JSON"),
    ("list.yaml", "- 1\n- 2\n", "expected a mapping of hardware fields"),
    ("missing.json", {k: v for k, v in H100_FIELDS.items() if k != "mem_bandwidth_bytes_s"},
     "mem_bandwidth_bytes_s: missing"),
    ("type.json", {**H100_FIELDS, "mem_capacity_bytes": "lots"},
     "mem_capacity_bytes: expected a number, got 'lots'"),
    ("bool.json", {**H100_FIELDS, "host_link_bandwidth_bytes_s": True},
     "host_link_bandwidth_bytes_s: expected a number"),
    ("negative.json", {**H100_FIELDS, "mem_bandwidth_bytes_s": -1},
     "mem_bandwidth_bytes_s: must be > 0, got -1"),
    ("zero.json", {**H100_FIELDS, "interconnect_bandwidth_bytes_s": 0},
     "interconnect_bandwidth_bytes_s: must be > 0, got 0"),
    ("latency.json", {**H100_FIELDS, "interconnect_latency_s": -1e-6},
     "interconnect_latency_s: must be >= 0"),
    ("dtype.json", {**H100_FIELDS, "peak_flops": {"bf16": 1e15, "fp6": 2e15}},
     "peak_flops.fp6: unknown dtype"),
    ("nobf16.json", {**H100_FIELDS, "peak_flops": {"fp8": 2e15}}, "peak_flops.bf16: missing"),
    ("peaks.json", {**H100_FIELDS, "peak_flops": 1e15}, "peak_flops: expected a mapping"),
    ("key.json", {**H100_FIELDS, "memory_gb": 80}, "memory_gb: unknown field"),
    ("tables.json", {**H100_FIELDS, "kernel_tables": "h800"},
     "kernel_tables: no shipped kernel tables named 'h800'"),
    ("name.json", {**H100_FIELDS, "name": ""}, "name: expected a non-empty string"),
    ("price.json", {**H100_FIELDS, "price_per_hour": 0}, "price_per_hour: must be > 0"),
]


@pytest.mark.parametrize("file_name, content, message", BAD_SPECS,
                         ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_one_line_error_naming_file_and_field(file_name, content, message,
                                                          tmp_path, capsys):
    path = tmp_path / file_name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert main(["replay", "--quiet", "--max-requests", "5", "--hardware", str(path),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path}: ") and message in err
    assert "\n" not in err and "Traceback" not in err


def test_missing_file_and_unknown_name(tmp_path, capsys):
    assert main(["roofline", "--model", "llama-3-8b", "--batch", "8",
                 "--hardware", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: cannot read the hardware spec" in capsys.readouterr().err
    assert main(["roofline", "--model", "llama-3-8b", "--batch", "8", "--hardware", "h999"]) == 2
    assert "or give the path of a hardware spec file" in capsys.readouterr().err


def test_roofline_and_toml_accept_a_spec_file(tmp_path, capsys):
    path = spec_file(tmp_path, "mi300x", name='"my-mi300x"')
    assert main(["roofline", "--model", "llama-3-8b", "--batch", "8", "--hardware", path]) == 0
    assert "my-mi300x" in capsys.readouterr().out
    config = tmp_path / "run.toml"
    config.write_text(f'hardware = "{path}"\nmodel = "llama-3-8b"\n')
    assert main(["replay", "--quiet", "--trace", TRACE, "--config", str(config),
                 "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["requests_finished"] == 40


def test_catalog_tables_and_datasheet_gpus():
    """Each GPU with shipped kernel tables names them; the issue's datasheet GPUs are there with
    dense peaks that grow (or stay) as the dtype narrows."""
    for name in shipped_hardware():
        assert HARDWARE[name].kernel_tables == name
    assert {h.kernel_tables for h in HARDWARE.values()} - {None} == set(shipped_hardware())
    for name in ("b200", "h20", "l4", "a10g", "rtx-4090", "rtx-pro-6000", "mi300x"):
        spec = HARDWARE[name]
        assert spec.compute_peak("int8") >= spec.compute_peak("bf16") > 0
        assert spec.compute_peak("fp8") >= spec.compute_peak("bf16")
    assert HARDWARE["h20"].peak_flops["bf16"] == 148e12
    assert HARDWARE["mi300x"].mem_capacity_bytes == 192e9
    assert HARDWARE["a10g"].mem_bandwidth_bytes_s == 600e9
    assert "fp8" not in HARDWARE["a10g"].peak_flops
    assert get_hardware("RTX4090") is HARDWARE["rtx-4090"]
    assert all(target in HARDWARE for target in HARDWARE_ALIASES.values())


def test_listings_show_aliases(capsys):
    assert main(["list", "hardware"]) == 0
    out = capsys.readouterr().out
    assert "aliases" in out and "h100-sxm" in out and "mi300x" in out
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "aliases" in out and all(alias in out for alias in MODEL_ALIASES)
    assert main(["list", "models", "--spec", "h100"]) == 2
    assert "--spec goes with `servesim list hardware`" in capsys.readouterr().err


def test_spec_price_backs_gpu_price_and_a_given_price_wins(tmp_path):
    from sim.sweep.capacity import Capacity
    from sim.sweep.cheapest import cheapest
    from sim.sweep.grid import expand_grid

    priced = spec_file(tmp_path, "h100", price_per_hour="4.0")
    cells = expand_grid({"trace": TRACE, "hardware": [priced, "a100"]})

    def capacity(options):
        return Capacity(1.0, 2.0, "tolerance")

    ranked = cheapest(ReplayOptions(), cells, {"a100": 1.0}, capacity)
    by_hardware = {p.cell.values["hardware"]: p.usd_per_million_requests for p in ranked}
    assert by_hardware[priced] == pytest.approx(4.0 / 3600 / 2.0 * 1e6)
    ranked = cheapest(ReplayOptions(), cells, {"a100": 1.0, priced: 0.5}, capacity)
    assert ranked[0].cell.values["hardware"] == priced
    with pytest.raises(ValueError, match="lacks a price for a100"):
        cheapest(ReplayOptions(), cells, {}, capacity)


def test_docs_table_matches_the_catalog():
    """docs/hardware.md lists every catalog entry with its aliases and numbers."""
    from pathlib import Path

    from sim.cost.catalog import aliases_of

    doc = (Path(__file__).parent.parent / "docs" / "hardware.md").read_text()

    def tflops(h, dtype):
        return f"{h.peak_flops[dtype] / 1e12:g}" if dtype in h.peak_flops else "-"

    for h in HARDWARE.values():
        row = (f"| `{h.name}` | {', '.join(aliases_of(h.name, HARDWARE_ALIASES)) or '-'} | "
               f"{h.description} | {tflops(h, 'bf16')} | {tflops(h, 'fp8')} | "
               f"{tflops(h, 'int8')} | {h.mem_capacity_bytes / 1e9:g} | "
               f"{h.mem_bandwidth_bytes_s / 1e9:g} | {h.interconnect_bandwidth_bytes_s / 1e9:g} | "
               f"{h.host_link_bandwidth_bytes_s / 1e9:g} | {h.kernel_tables or '-'} |")
        assert row in doc, row


def test_spec_of_an_unknown_name_is_a_clean_error(capsys):
    assert main(["list", "hardware", "--spec", "h999"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown hardware 'h999'") and err.count("\n") == 1
