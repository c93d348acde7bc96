"""Backend tests need torch (the `backend` extra); without it they skip with the reason."""

import pytest

pytest.importorskip("torch", reason="the real backend needs torch: pip install -e '.[backend]'")


@pytest.fixture(scope="module")
def reference_outputs():
    """Greedy outputs of the shared tiny workload from the plain no-cache recompute loop."""
    import torch

    from backend.model import LlamaModel, init_random
    from backend.recompute import generate_recompute
    from backend.runner import seeded_prompt
    from sim.config import resolve
    from tests.real.tiny_llama import tiny_options

    torch.set_num_threads(1)
    config = resolve(tiny_options())
    model = init_random(LlamaModel(config.model), seed=3).eval()
    return {
        r.request_id: generate_recompute(model, seeded_prompt(r, config.model.vocab_size, 3),
                                         r.output_tokens)
        for r in config.trace.requests
    }
