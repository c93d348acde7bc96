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
