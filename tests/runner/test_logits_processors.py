"""Penalties, logit bias, allowed token ids, bad words and min_tokens on hand-computed
logits."""

from __future__ import annotations

import torch

from toolkit.protocol import SamplingParams
from toolkit.runner.logits_processors import (
    TokenHistory,
    apply_allowed_token_ids,
    apply_bad_words,
    apply_logit_bias,
    apply_min_tokens,
    apply_penalties,
)
from toolkit.runner.sampler import process_logits

LOGITS = torch.tensor([[2.0, -1.0, 0.5, 1.0]])
NEG_INF = float("-inf")


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    params = [SamplingParams(repetition_penalty=2.0)]
    out = apply_penalties(LOGITS, params, [TokenHistory([0], [1])])
    assert out[0].tolist() == [1.0, -2.0, 0.5, 1.0]


def test_frequency_and_presence_penalties_count_output_tokens_only():
    params = [SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)]
    out = apply_penalties(LOGITS, params, [TokenHistory([0, 0], [2, 2, 3])])
    # token 2: 0.5 - 2 * 0.5 - 0.25; token 3: 1 - 0.5 - 0.25; prompt token 0 untouched
    assert out[0].tolist() == [2.0, -1.0, -0.75, 0.25]


def test_logit_bias_adds_per_token():
    out = apply_logit_bias(LOGITS, [SamplingParams(logit_bias=((1, 5.0), (3, -1.0)))])
    assert out[0].tolist() == [2.0, 4.0, 0.5, 0.0]


def test_allowed_token_ids_mask_everything_else():
    logits = LOGITS.expand(2, -1)
    out = apply_allowed_token_ids(logits, [SamplingParams(allowed_token_ids=(2, 3)),
                                           SamplingParams()])
    assert out[0].tolist() == [NEG_INF, NEG_INF, 0.5, 1.0]
    assert torch.equal(out[1], logits[1])


def test_min_tokens_masks_eos_and_stop_ids_until_reached():
    params = [SamplingParams(min_tokens=2, stop_token_ids=(3,), eos_token_ids=(0,))]
    early = apply_min_tokens(LOGITS, params, [TokenHistory([1], [2])])
    assert early[0].tolist() == [NEG_INF, -1.0, 0.5, NEG_INF]
    reached = apply_min_tokens(LOGITS, params, [TokenHistory([1], [2, 2])])
    assert torch.equal(reached, LOGITS)
    ignoring = [SamplingParams(min_tokens=2, ignore_eos=True, eos_token_ids=(0,))]
    assert torch.equal(apply_min_tokens(LOGITS, ignoring, [TokenHistory([1], [])]), LOGITS)


def test_processors_leave_the_input_tensor_unchanged():
    logits = LOGITS.clone()
    params = [SamplingParams(logit_bias=((0, 1.0),), repetition_penalty=1.5, min_tokens=1,
                             eos_token_ids=(1,))]
    process_logits(logits, params, [TokenHistory([0], [])])
    assert torch.equal(logits, LOGITS)


def test_bad_words_ban_the_last_token_only_after_the_rest_of_the_word():
    # bad words: [3] (one token: always banned) and [1, 2] (2 banned only right after 1)
    params = [SamplingParams(bad_words_token_ids=((3,), (1, 2)))] * 3
    histories = [TokenHistory([1], []), TokenHistory([0], [0, 1]), TokenHistory([1], [1, 0])]
    out = apply_bad_words(LOGITS.expand(3, -1), params, histories)
    assert out[0].tolist() == [2.0, -1.0, 0.5, NEG_INF]  # the prompt's 1 does not count
    assert out[1].tolist() == [2.0, -1.0, NEG_INF, NEG_INF]
    assert out[2].tolist() == [2.0, -1.0, 0.5, NEG_INF]


def test_bad_words_longer_than_the_output_and_rows_without_them_are_untouched():
    params = [SamplingParams(bad_words_token_ids=((0, 1, 2),)), SamplingParams()]
    out = apply_bad_words(LOGITS.expand(2, -1), params,
                          [TokenHistory([0, 1], [1]), TokenHistory([], [])])
    assert torch.equal(out, LOGITS.expand(2, -1))
    out = apply_bad_words(LOGITS, params[:1], [TokenHistory([], [2, 0, 1])])
    assert out[0].tolist() == [2.0, -1.0, NEG_INF, 1.0]


def test_bad_words_never_leave_a_row_without_tokens():
    params = [SamplingParams(allowed_token_ids=(3,), bad_words_token_ids=((3,),))]
    out = process_logits(LOGITS, params, [TokenHistory([], [])])
    assert out[0].tolist() == [NEG_INF, NEG_INF, NEG_INF, 1.0]
