"""One seed, split into independent random streams.

Each stream gets its own `SeedSequence` child, so changing how one stream is drawn (say, the
prompt-length distribution) never changes what another stream (the arrival times) produces.
"""

from __future__ import annotations

import numpy as np

ARRIVALS_STREAM = 0
PROMPT_TOKENS_STREAM = 1
OUTPUT_TOKENS_STREAM = 2
TOKEN_IDS_STREAM = 3
THINK_TIME_STREAM = 4
PRIORITY_STREAM = 5
PROMPT_ORDER_STREAM = 6
NUM_STREAMS = 7
"""Children of a SeedSequence depend only on their index, so adding streams moves none."""


def stream_rng(seed: int, stream: int) -> np.random.Generator:
    """The generator for `stream` (one of the *_STREAM constants) under `seed`."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(NUM_STREAMS)[stream])
