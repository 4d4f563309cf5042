"""Beam search over the engine vs a brute-force search of every sequence, on a tiny random
Llama (vocabulary 8, EOS 0) served by the real engine."""

from __future__ import annotations

import itertools

import pytest
import torch
from tiny_engine import TINY_EOS, TINY_VOCAB, build_tiny_runtime

from toolkit.api.openai.beam_search import BeamSearchParams, beam_score, beam_search

VOCAB = TINY_VOCAB
EOS = TINY_EOS
MAX_TOKENS = 3
PROMPT = [3, 5, 2, 7]
EXHAUSTIVE = (VOCAB - 1) ** (MAX_TOKENS - 1)
"""Live beams before the last round when nothing is pruned (non-EOS prefixes)."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, runtime):
    """(transformers model, started AsyncEngine) over the same tiny random checkpoint."""
    model, tiny_runtime = build_tiny_runtime(tmp_path_factory.mktemp("tiny"), runtime.model_dir)
    tiny_runtime.engine.start()
    yield model, tiny_runtime.engine
    tiny_runtime.engine.shutdown()


def brute_force(model, length_penalty: float) -> list[tuple[tuple[int, ...], float]]:
    """Every finished sequence (up to EOS, or MAX_TOKENS long) with its score, best first."""
    sequences = [tuple(s[:s.index(EOS) + 1] if EOS in s else s)
                 for s in itertools.product(range(VOCAB), repeat=MAX_TOKENS)]
    scored = []
    with torch.no_grad():
        for seq in sorted(set(sequences)):
            ids = torch.tensor([PROMPT + list(seq)])
            logprobs = model(ids).logits[0].log_softmax(-1)
            total = sum(logprobs[len(PROMPT) - 1 + i, t].item() for i, t in enumerate(seq))
            scored.append((seq, beam_score(total, len(seq), length_penalty)))
    return sorted(scored, key=lambda item: item[1], reverse=True)


def params(width: int, **fields) -> BeamSearchParams:
    return BeamSearchParams(beam_width=width, max_tokens=MAX_TOKENS, vocab_size=VOCAB,
                            stop_token_ids=(EOS,), **fields)


@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
async def test_wide_beams_find_the_best_sequences(tiny, length_penalty):
    model, engine = tiny
    expected = brute_force(model, length_penalty)
    beams = await beam_search(engine, f"wide-{length_penalty}", PROMPT,
                              params(EXHAUSTIVE, length_penalty=length_penalty))
    top = [(tuple(b.token_ids), b.score(length_penalty)) for b in beams[:5]]
    assert [seq for seq, _ in top] == [seq for seq, _ in expected[:5]]
    for (_, ours), (_, reference) in zip(top, expected):
        assert ours == pytest.approx(reference, abs=1e-4)
    for beam in beams:
        assert beam.finish_reason == ("stop" if beam.token_ids[-1] == EOS else "length")


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
async def test_narrow_beams_are_ordered_and_scored_exactly(tiny, early_stopping):
    model, engine = tiny
    scores = dict(brute_force(model, 1.0))
    beams = await beam_search(engine, f"narrow-{early_stopping}", PROMPT,
                              params(2, early_stopping=early_stopping))
    assert 1 <= len(beams) <= 2
    ours = [b.score(1.0) for b in beams]
    assert ours == sorted(ours, reverse=True)
    for beam in beams:
        assert beam.score(1.0) == pytest.approx(scores[tuple(beam.token_ids)], abs=1e-4)
    assert ours[0] <= max(scores.values()) + 1e-4


async def test_greedy_width_one_follows_the_argmax(tiny):
    model, engine = tiny
    [beam] = await beam_search(engine, "greedy", PROMPT, params(1))
    ids = list(PROMPT)
    with torch.no_grad():
        for _ in range(MAX_TOKENS):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] == EOS:
                break
    assert beam.token_ids == ids[len(PROMPT):]
