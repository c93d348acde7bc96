"""`servesim replay --executor real`: the simulator's files plus outputs.jsonl, one object per
trace row; bad combinations are one-line errors."""

from __future__ import annotations

import csv
import json

import pytest

from sim.cli import main


def test_real_replay_writes_outputs_for_every_row(tmp_path, capsys):
    trace = tmp_path / "lengths.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n20,5\n90,5\nabc,3\n8,1\n")
    out = tmp_path / "out"
    code = main(["replay", "--quiet", "--executor", "real", "--model", "tiny-llama",
                 "--trace", str(trace), "--arrivals", "poisson:100", "--max-model-len", "64",
                 "--num-gpu-blocks", "32", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests_total"] == 4 and summary["requests_finished"] == 2
    rows = list(csv.DictReader((out / "requests.csv").open()))
    assert [r["status"] for r in rows] == ["finished", "rejected", "rejected", "finished"]
    lines = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    assert [sorted(obj) for obj in lines] == [["output_token_ids", "request_id"]] * 4
    assert [obj["request_id"] for obj in lines] == [0, 1, 2, 3]
    assert [len(obj["output_token_ids"]) for obj in lines] == [5, 0, 0, 1]
    assert all(isinstance(t, int) for t in lines[0]["output_token_ids"])
    assert "cpu" in capsys.readouterr().out  # --hardware defaults to the device it runs on


def test_real_replay_is_deterministic_for_a_seed(tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert main(["replay", "--quiet", "--executor", "real", "--model", "tiny-llama",
                     "--trace", "synthetic:n=4,arrivals=poisson:50,prompt=fixed:12,output=fixed:6",
                     "--temperature", "1.0", "--top-p", "0.9", "--seed", "5",
                     "--num-gpu-blocks", "16", "--out", str(out)]) == 0
        outs.append((out / "outputs.jsonl").read_text())
    assert outs[0] == outs[1]


@pytest.mark.parametrize("argv,message", [
    (["--temperature", "0.7"], "--temperature applies only to --executor real"),
    (["--executor", "gpu"], "unknown executor 'gpu'"),
    (["--pace", "fast"], "unknown pace 'fast'"),
    (["--executor", "real", "--model", "tiny-llama", "--top-p", "0"], "--top-p must lie in (0, 1]"),
    (["--executor", "real", "--model", "mixtral-8x7b", "--hardware", "h100"], "dense gated-MLP"),
    (["--executor", "real", "--model", "jamba-v0.1", "--hardware", "h100"], "dense gated-MLP"),
    (["--executor", "real", "--model", "tiny-llama", "--weights", "/nonexistent"],
     "no *.safetensors"),
    # checked before any weight is allocated or read (it was an out-of-memory kill)
    (["--executor", "real", "--model", "llama-3-70b", "--weights", "/nonexistent"],
     "llama-3-70b needs 282.2 GB of fp32 weights, over half of this machine's"),
    (["--executor", "real", "--model", "tiny-llama", "--replicas", "2"], "runs one replica"),
    (["--executor", "real", "--model", "tiny-llama", "--speculator", "tree"],
     "--speculator tree does not run on the real backend yet"),
    (["--executor", "real", "--model", "tiny-llama", "--allocator", "contiguous",
      "--preemption", "swap"], "use a paged allocator with --preemption swap"),
    (["--executor", "real", "--model", "tiny-llama", "--allocator", "radix"],
     "use --allocator paged, paged-prefix or contiguous"),
    (["--executor", "real", "--model", "tiny-llama", "--max-model-len", "5000"],
     "exceeds tiny-llama's context of 4096"),
])
def test_bad_real_options_are_clear_errors(argv, message, capsys):
    trace = "synthetic:n=2,arrivals=poisson:10,prompt=fixed:8,output=fixed:2"
    assert main(["replay", "--quiet", "--trace", trace, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err


def test_real_replay_runs_an_inference_perf_closed_loop(tmp_path, capsys):
    config = tmp_path / "concurrent.yaml"
    config.write_text("data: {type: shared_prefix, shared_prefix: {num_groups: 2, "
                      "num_prompts_per_group: 2, system_prompt_len: 16, question_len: 8, "
                      "output_len: 4}}\n"
                      "load: {type: concurrent, stages: [{num_requests: 6, concurrency_level: 2}, "
                      "{num_requests: 2, concurrency_level: 1}]}\n")
    out = tmp_path / "out"
    assert main(["replay", "--quiet", "--executor", "real", "--model", "tiny-llama",
                 "--trace", f"inference-perf:{config}", "--allocator", "paged-prefix",
                 "--block-size", "4", "--num-gpu-blocks", "64", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    rows = list(csv.DictReader((out / "requests.csv").open()))
    assert [r["status"] for r in rows] == ["finished"] * 8
    assert [r["stage"] for r in rows] == ["0"] * 6 + ["1"] * 2
    send = [float(r["arrival_s"]) for r in rows]
    finish = [float(r["finish_s"]) for r in rows]
    for i, limit in zip(range(8), [2] * 6 + [1] * 2):
        stage = range(0, 6) if i < 6 else range(6, 8)
        assert sum(1 for j in stage if send[j] <= send[i] < finish[j]) <= limit
    assert send[6] >= max(finish[:6])  # stage 1 starts when stage 0 has drained
    assert send == sorted(send) and send[2] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prefix_hit_rate"] > 0  # repeated prompts hit on the real pool too


def test_outputs_jsonl_of_a_model_with_a_tokenizer_gives_the_text(tmp_path, capsys):
    """smollm2-135m runs its GGUF weights with their tokenizer: each row's text is its ids
    decoded, the samples' texts beside their ids; tiny-llama (seeded weights) has none."""
    from backend.gguf_weights import INSTALL_HINT, find_gguf, load_tokenizer, open_gguf

    if find_gguf() is None:
        pytest.skip(f"SmolLM2 weights not installed ({INSTALL_HINT})")
    out = tmp_path / "out"
    assert main(["replay", "--quiet", "--executor", "real", "--model", "smollm2-135m",
                 "--trace", "synthetic:n=1,arrivals=poisson:50,prompt=fixed:12,output=fixed:6",
                 "--n", "2", "--temperature", "1.0", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    (row,) = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    tokenizer = load_tokenizer(open_gguf(find_gguf()))
    assert len(row["output_token_ids"]) == 6 and row["output_text"].strip()
    assert row["output_text"] == tokenizer.decode(row["output_token_ids"])
    assert row["sample_output_texts"] == [tokenizer.decode(ids)
                                          for ids in row["sample_output_token_ids"]]
