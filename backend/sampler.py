"""Token sampling and exact speculative verification, seeded per request.

Every draw uses a generator seeded from (seed, request id, output index), so a request's
tokens do not depend on which other requests share its batches, on preemption, or on
recompute: the schedule changes timing, never outputs.

Speculative verification follows Leviathan et al. / gpt-fast: draft token x with draft
probability q(x) is accepted with probability min(1, p(x) / q(x)); at the first rejection the
replacement is drawn from norm(max(p - q, 0)); if all k are accepted a bonus token is drawn
from the target's next distribution. The output is then distributed exactly as target
sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """temperature 0 is greedy; top_k 0 and top_p 1 disable those filters."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0


def generator_for(seed: int, request_id: int, output_index: int) -> torch.Generator:
    """A fresh CPU generator for one draw; the mix keeps nearby triples far apart."""
    mixed = (seed * 0x9E3779B97F4A7C15 + request_id * 0xBF58476D1CE4E5B9
             + output_index * 0x94D049BB133111EB) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def probabilities(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """logits [..., V] -> the distribution sampling draws from, after temperature, top-k and
    top-p (fp32). Greedy is the one-hot of the argmax."""
    logits = logits.float()
    if params.is_greedy:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / params.temperature
    if params.top_k:
        kth = torch.topk(logits, min(params.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_logits = sorted_logits.masked_fill(mass_before >= params.top_p, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.softmax(logits, dim=-1)


def sample(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator) -> int:
    """One token from logits [V]."""
    if params.is_greedy:
        return int(logits.argmax())
    probs = probabilities(logits, params).cpu()
    return int(torch.multinomial(probs, 1, generator=gen))


def verify_greedy(target_logits: torch.Tensor, draft_tokens: list[int]) -> list[int]:
    """target_logits [k + 1, V] at the draft positions (and one past): accept the draft while
    it equals the target's argmax; return the accepted tokens plus the target's next token."""
    best = target_logits.argmax(-1).tolist()
    out: list[int] = []
    for position, token in enumerate(draft_tokens):
        if token != best[position]:
            break
        out.append(token)
    out.append(best[len(out)])
    return out


def verify_rejection(
    target_probs: torch.Tensor, draft_probs: torch.Tensor, draft_tokens: list[int],
    gen: torch.Generator,
) -> list[int]:
    """Exact speculative sampling. target_probs [k + 1, V], draft_probs [k, V] (the
    distributions the draft tokens were drawn from). Returns 1 to k + 1 tokens."""
    target_probs = target_probs.float().cpu()
    draft_probs = draft_probs.float().cpu()
    out: list[int] = []
    for position, token in enumerate(draft_tokens):
        p, q = target_probs[position, token], draft_probs[position, token]
        if q > 0 and torch.rand((), generator=gen) < torch.clamp(p / q, max=1.0):
            out.append(token)
            continue
        residual = torch.clamp(target_probs[position] - draft_probs[position], min=0.0)
        if residual.sum() <= 0:  # p == q exactly: rejection has probability 0, but be total
            residual = target_probs[position]
        out.append(int(torch.multinomial(residual / residual.sum(), 1, generator=gen)))
        return out
    out.append(int(torch.multinomial(target_probs[len(draft_tokens)], 1, generator=gen)))
    return out
