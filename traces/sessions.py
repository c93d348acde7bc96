"""Multi-turn chat sessions with a shared system prompt: prefix reuse without a special trace.

Session starts follow an arrival process. Each session has `turns` requests; turn k's prompt
is turn k-1's prompt + its answer + new user text, all behind one system prompt that every
session shares, so a prefix cache can hit the system prompt across sessions and the whole
history within a session. Token ids are synthetic (uniform over a 32,000-token vocabulary);
the answer's ids are drawn up front, as the open-loop trace cannot wait for real outputs. Turn
k+1 arrives an exponential think time (mean `think_s`) after turn k.

    turn 1: [system][user1]                      -> answer1
    turn 2: [system][user1][answer1][user2]      -> answer2
    turn 3: [system][user1][answer1][user2][answer2][user3] ...
"""

from __future__ import annotations

from dataclasses import dataclass

from policies.types import Request
from traces.seeding import (
    ARRIVALS_STREAM, OUTPUT_TOKENS_STREAM, PROMPT_TOKENS_STREAM, THINK_TIME_STREAM,
    TOKEN_IDS_STREAM, stream_rng,
)
from traces.synthetic import ArrivalProcess, LengthDistribution, parse_arrivals, parse_lengths
from traces.trace import Trace

VOCAB_SIZE = 32_000
SESSIONS_SYNTAX = (
    "sessions:n=SESSIONS,turns=T,system=TOKENS,user=LENGTHS,answer=LENGTHS,arrivals=ARRIVALS,"
    "think=SECONDS (e.g. sessions:n=200,turns=4,system=512,user=lognormal:200:0.5,"
    "answer=lognormal:150:0.5,arrivals=poisson:1,think=20)"
)


@dataclass(frozen=True, slots=True)
class SessionSpec:
    num_sessions: int
    turns: int
    system_tokens: int
    user: LengthDistribution
    answer: LengthDistribution
    arrivals: ArrivalProcess
    think_s: float

    def __post_init__(self) -> None:
        if self.num_sessions < 1 or self.turns < 1 or self.system_tokens < 0:
            raise ValueError("sessions and turns must be >= 1 and system tokens >= 0")
        if not self.think_s >= 0:
            raise ValueError(f"think time must be >= 0 s, got {self.think_s}")


def session_trace(spec: SessionSpec, seed: int, name: str = "sessions") -> Trace:
    starts = spec.arrivals.sample(spec.num_sessions, stream_rng(seed, ARRIVALS_STREAM))
    count = spec.num_sessions * spec.turns
    user_tokens = spec.user.sample(count, stream_rng(seed, PROMPT_TOKENS_STREAM))
    answer_tokens = spec.answer.sample(count, stream_rng(seed, OUTPUT_TOKENS_STREAM))
    think = stream_rng(seed, THINK_TIME_STREAM).exponential(spec.think_s or 1.0, count)
    ids_rng = stream_rng(seed, TOKEN_IDS_STREAM)
    system = ids_rng.integers(0, VOCAB_SIZE, spec.system_tokens).tolist()

    turns: list[tuple[float, int, tuple[int, ...], int]] = []  # (arrival, session, ids, output)
    for session in range(spec.num_sessions):
        history = list(system)
        arrival = float(starts[session])
        for turn in range(spec.turns):
            k = session * spec.turns + turn
            history += ids_rng.integers(0, VOCAB_SIZE, int(user_tokens[k])).tolist()
            turns.append((arrival, session, tuple(history), int(answer_tokens[k])))
            history += ids_rng.integers(0, VOCAB_SIZE, int(answer_tokens[k])).tolist()
            arrival += float(think[k]) if spec.think_s else 0.0
    turns.sort(key=lambda t: (t[0], t[1]))
    requests = [
        Request(i, arrival, len(ids), output, prompt_token_ids=ids)
        for i, (arrival, _, ids, output) in enumerate(turns)
    ]
    note = (f"sessions: {spec.num_sessions} x {spec.turns} turns, system prompt "
            f"{spec.system_tokens} tokens, user {spec.user.spec}, answer {spec.answer.spec}, "
            f"starts {spec.arrivals.spec}, think {spec.think_s} s, seed {seed}")
    return Trace(name, requests, [], [note])


def parse_sessions(text: str) -> SessionSpec:
    head, _, body = text.strip().partition(":")
    keys = ("n", "turns", "system", "user", "answer", "arrivals", "think")
    if head != "sessions" or not body:
        raise ValueError(f"bad sessions spec {text!r}; expected {SESSIONS_SYNTAX}")
    settings = {}
    for item in body.split(","):
        key, equals, value = item.partition("=")
        if not equals or key.strip() not in keys or key.strip() in settings:
            raise ValueError(f"bad item {item!r} in sessions spec; expected {SESSIONS_SYNTAX}")
        settings[key.strip()] = value.strip()
    missing = [k for k in keys if k not in settings]
    if missing:
        raise ValueError(f"sessions spec lacks {', '.join(missing)}; expected {SESSIONS_SYNTAX}")
    try:
        return SessionSpec(
            num_sessions=int(settings["n"]), turns=int(settings["turns"]),
            system_tokens=int(settings["system"]), user=parse_lengths(settings["user"], 0),
            answer=parse_lengths(settings["answer"], 1),
            arrivals=parse_arrivals(settings["arrivals"]), think_s=float(settings["think"]),
        )
    except ValueError as error:
        raise ValueError(f"bad sessions spec {text!r}: {error}; expected {SESSIONS_SYNTAX}") from None
