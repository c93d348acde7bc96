"""Numbers that look like a failure but follow from the inputs come with a one-line note."""

from __future__ import annotations

import pytest

from sim.cli import main

SESSIONS = ("sessions:n=30,turns=2,system=512,user=lognormal:100:0.5,answer=lognormal:80:0.5,"
            "arrivals=poisson:2,think=5")


def notes(capsys, *argv: str) -> list[str]:
    assert main(["replay", "--quiet", "--max-requests", "40", "--cost-model", "roofline",
                 *argv]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]


def test_zero_hit_rate_on_a_length_only_trace_says_why(capsys):
    (note,) = notes(capsys, "--allocator", "paged-prefix")
    assert "prefix_hit_rate is 0 because trace azure_conv_2023_head2000 gives prompt lengths only" in note


def test_prefix_affinity_over_length_only_prompts_says_it_routed_by_load(capsys):
    notes_ = notes(capsys, "--allocator", "paged-prefix", "--replicas", "2",
                   "--router", "prefix-affinity")
    assert any("--router prefix-affinity found no shared prefixes" in note for note in notes_)


def test_prefix_affinity_without_a_caching_allocator_is_refused(capsys):
    """The router reads every replica's prefix cache: `paged` has none, so the run is an error
    when it is built, not a run routed by load alone."""
    assert main(["replay", "--quiet", "--max-requests", "40", "--replicas", "2",
                 "--router", "prefix-affinity"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --router prefix-affinity routes by cached prefixes, but --allocator paged "
        "caches none (use --allocator paged-prefix or radix)")


@pytest.mark.parametrize("allocator", ["paged-prefix", "radix"])
def test_no_note_when_prefixes_can_be_shared(capsys, allocator):
    assert notes(capsys, "--trace", SESSIONS, "--allocator", allocator, "--replicas", "2",
                 "--router", "prefix-affinity") == []


def test_no_note_for_a_plain_run(capsys):
    assert notes(capsys) == []


@pytest.mark.parametrize("argv, note", [
    (["--token-budget", "512"], "--token-budget 512 has no effect: only --scheduler chunked "
                                "reads it, and this run uses continuous"),
    (["--spec-k", "3"], "--spec-k 3 has no effect: only --speculator draft, tree, ngram, "
                        "cascade or lookahead reads it, and this run uses none"),
    (["--tiny-draft-model", "llama-3.2-1b"], "only --speculator cascade reads it"),
    (["--router", "least-outstanding"], "--router least-outstanding has no effect without "
                                        "several replicas (--replicas or --disaggregate)"),
    (["--kv-link-latency-s", "0.1"], "--kv-link-latency-s 0.1 has no effect without "
                                     "--disaggregate"),
    (["--swap-space-gb", "8"], "--swap-space-gb 8.0 has no effect without --preemption swap"),
    (["--spec-acceptance", "0.5"], "--spec-acceptance 0.5 has no effect without a --speculator"),
])
def test_an_option_the_run_does_not_read_is_noted_not_silently_ignored(capsys, argv, note):
    assert any(note in line for line in notes(capsys, *argv))


@pytest.mark.parametrize("argv", [
    [], ["--scheduler", "chunked", "--token-budget", "512"],
    ["--preemption", "swap", "--swap-space-gb", "8"],
    ["--replicas", "2", "--router", "least-outstanding"],
    ["--scheduler", "continuous", "--max-num-seqs", "64"],  # every scheduler reads it
])
def test_options_the_run_reads_bring_no_note(capsys, argv):
    assert notes(capsys, *argv) == []


def _another_value(knob):
    """A valid value of `knob` other than its default."""
    if knob.choices:
        return next(c for c in knob.choices if c != knob.default)
    base = knob.type_text.split("|")[0].strip()
    if base == "bool":
        return not knob.default
    if base in ("int", "float"):
        start = knob.default if knob.default is not None else knob.low or 1
        if base == "int":
            return start + 1
        return start + 3 if knob.high is None else (start + knob.high) / 2
    return "llama-3.2-1b"


def test_every_knob_of_an_unpicked_policy_is_covered():
    """Each policy knob set away from its default, under the default run (continuous, paged,
    no speculator, one replica), is noted unless the default policy of its kind reads it."""
    from sim.config import ReplayOptions
    from sim.policy_knobs import KNOB_OPTIONS
    from sim.run_notes import SELECTED_BY, unread_options

    defaults = ReplayOptions()
    for knob in KNOB_OPTIONS:
        if knob.kind not in SELECTED_BY:
            continue
        noted = unread_options(defaults.updated({knob.name: _another_value(knob)}))
        read = getattr(defaults, SELECTED_BY[knob.kind]) in knob.policies
        assert (noted == []) == read, (knob.name, noted)


def measured_notes(capsys, *argv: str) -> list[str]:
    assert main(["replay", "--quiet", "--max-requests", "20", "--cost-model", "measured",
                 *argv]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("note: ")]


@pytest.mark.parametrize("argv, note", [
    (["--kv-dtype", "mxfp4"], "note: attention with the KV cache at mxfp4: the vllm-0.24.0 "
                              "kernel tables of h100 measure none; priced from the bf16-KV "
                              "attention tables, scaled by the roofline (extrapolated)"),
    (["--hardware", "a100", "--kv-dtype", "fp8"], "note: attention with the KV cache at fp8: "
                                                  "the vllm-0.14.0 kernel tables of a100 "
                                                  "measure none"),
    (["--weight-dtype", "int4"], "note: GEMMs with weights at int4: the vllm-0.24.0 kernel "
                                 "tables of h100 measure none; priced from the bf16 GEMMs"),
    (["--model", "deepseek-v2-lite", "--hardware", "a100"],
     "note: mla attention: the vllm-0.14.0 kernel tables of a100 measure none; priced by the "
     "roofline alone"),
])
def test_a_kernel_no_table_measures_at_the_run_s_dtypes_is_noted(capsys, argv, note):
    """The measured model prices it from another dtype's table (or the roofline): the run
    says so instead of letting `--kv-dtype`/`--weight-dtype` look measured."""
    assert any(line.startswith(note) for line in measured_notes(capsys, *argv))


@pytest.mark.parametrize("argv", [[], ["--kv-dtype", "fp8"], ["--weight-dtype", "fp8"],
                                  ["--hardware", "a100"]])
def test_dtypes_the_tables_measure_bring_no_note(capsys, argv):
    assert measured_notes(capsys, *argv) == []
