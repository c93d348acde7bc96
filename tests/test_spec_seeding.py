"""Request streams' generators built from seed words worked out a block of ids at once
(`sim.speculation.seeding`) are numpy's `default_rng(SeedSequence([seed, id]))`, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.speculation.acceptance import BetaAcceptance, PositionalAcceptance
from sim.speculation.seeding import IDS_PER_BLOCK, SeedWords, request_generator


def _numpy_generator(seed: int, request_id: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, request_id]))


@settings(max_examples=300, deadline=None)
@given(seed=st.one_of(st.integers(0, 2**16), st.integers(0, 2**130)),
       request_id=st.one_of(st.integers(0, 3 * IDS_PER_BLOCK), st.integers(0, 2**34)))
def test_generator_state_is_numpys(seed: int, request_id: int) -> None:
    """Any seed (one word or several) and id (one word, or past 2**32 where numpy seeds it)."""
    ours, numpys = request_generator(seed, request_id), _numpy_generator(seed, request_id)
    assert ours.bit_generator.state == numpys.bit_generator.state
    assert ours.random(300).tolist() == numpys.random(300).tolist()


@pytest.mark.parametrize("request_id", [0, 1, IDS_PER_BLOCK - 1, IDS_PER_BLOCK, 2**32 - 1])
def test_block_edges(request_id: int) -> None:
    for seed in (0, 2**32 - 1, 2**32, 2**64 + 1):
        assert (request_generator(seed, request_id).bit_generator.state
                == _numpy_generator(seed, request_id).bit_generator.state)


def test_streams_draw_as_numpy_seeded_ones() -> None:
    """A stream's drawn alpha and uniforms are those of numpy's own seeding."""
    model = BetaAcceptance(0.7, 10.0)
    for request_id in range(0, 5000, 37):
        rng = _numpy_generator(3, request_id)
        alpha = float(rng.beta(0.7 * 10.0, (1.0 - 0.7) * 10.0))
        assert model.stream(3, request_id).alpha == alpha
    stream = PositionalAcceptance((0.6,)).stream(11, 4242)
    uniforms = _numpy_generator(11, 4242).random(256)
    drawn = [stream.accepted_prefix((0.6,) * 5) for _ in range(40)]
    expected, position = [], 0
    for _ in range(40):
        accepted = 0
        while accepted < 5 and uniforms[position] < 0.6:
            accepted, position = accepted + 1, position + 1
        position += accepted < 5  # the rejecting uniform was judged too
        expected.append(accepted)
    assert drawn == expected


def test_seed_words_serve_only_pcg64() -> None:
    words = SeedWords(np.zeros(4, dtype=np.uint64))
    with pytest.raises(ValueError, match="PCG64"):
        words.generate_state(8, np.uint32)
