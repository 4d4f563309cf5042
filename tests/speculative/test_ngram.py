"""Prompt lookup: which n-gram matches and what it proposes."""

from __future__ import annotations

from toolkit.protocol import Request, SamplingParams
from toolkit.runner.proposer import DraftRequest
from toolkit.speculative.ngram import NgramProposer, lookup_ngram


def test_longest_suffix_wins_over_a_shorter_earlier_match():
    #         0  1  2  3  4  5  6  7  8  9
    tokens = [9, 3, 7, 1, 2, 3, 8, 5, 2, 3]
    # the 2-gram (2, 3) occurred at 4; the 1-gram (3) first at 1
    assert lookup_ngram(tokens, 3, 1, 3) == [8, 5, 2]
    assert lookup_ngram(tokens, 3, 1, 1) == [7, 1, 2]


def test_earliest_occurrence_and_the_cap():
    tokens = [4, 5, 1, 4, 5, 2, 4, 5]
    assert lookup_ngram(tokens, 2, 2, 2) == [1, 4]
    assert lookup_ngram(tokens, 1, 2, 2) == [1]


def test_continuation_may_be_shorter_than_k():
    tokens = [1, 2, 3, 1, 2]
    assert lookup_ngram(tokens, 5, 2, 2) == [3, 1, 2]


def test_no_match_below_min_n():
    assert lookup_ngram([1, 2, 3, 4], 3, 1, 4) == []
    tokens = [6, 1, 9, 2, 1]
    assert lookup_ngram(tokens, 3, 1, 3) == [9, 2, 1]
    assert lookup_ngram(tokens, 3, 2, 3) == []


def test_repeated_token_runs_overlap():
    assert lookup_ngram([7, 7, 7, 7], 3, 2, 3) == [7]
    assert lookup_ngram([7, 7, 7, 7, 7], 2, 1, 2) == [7, 7]


def test_proposer_reads_prompt_and_output_and_has_no_probs():
    request = Request("r", [10, 11, 12, 13], SamplingParams(), output_token_ids=[20, 11, 12])
    proposer = NgramProposer(prompt_lookup_min=1, prompt_lookup_max=3)
    [proposal] = proposer.propose([DraftRequest("r", request.all_token_ids, SamplingParams(), 2)])
    assert proposal.token_ids == [13, 20] and proposal.probs is None
    assert proposer.propose([DraftRequest("s", [1, 2, 3], SamplingParams(), 4)]) == [None]
    assert len(proposer) == 0
