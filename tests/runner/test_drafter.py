"""The drafter: which requests draft after sampling, how many tokens, and the draft
distributions it keeps until verification."""

from __future__ import annotations

import torch

from toolkit.protocol import Request, RunnerOutput, SamplingParams
from toolkit.protocol.outputs import ScheduledRequest
from toolkit.runner.drafter import Drafter
from toolkit.runner.proposer import Proposal, Proposer


class FixedProposer(Proposer):
    """Proposes ``drafts`` (capped), with q rows when ``vocab`` is set; records calls."""

    def __init__(self, drafts: list[int], vocab: int | None = None) -> None:
        self.drafts = drafts
        self.vocab = vocab
        self.calls: list[list[tuple[str, list[int], int]]] = []
        self.released: list[str] = []

    def propose(self, requests):
        self.calls.append([(r.request_id, r.token_ids, r.max_num_tokens) for r in requests])
        out = []
        for r in requests:
            drafts = self.drafts[:r.max_num_tokens]
            probs = torch.full((len(drafts), self.vocab), 1 / self.vocab) if self.vocab else None
            out.append(Proposal(drafts, probs) if drafts else None)
        return out

    def release(self, request_id):
        self.released.append(request_id)


def decode(i: int, prompt_len: int = 6, max_tokens: int = 20) -> ScheduledRequest:
    request = Request(f"r{i}", list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens))
    request.output_token_ids = [7]
    request.num_computed_tokens = prompt_len
    return ScheduledRequest(request, prompt_len, 1)


def test_drafts_from_the_tokens_after_this_step_capped_by_max_tokens_and_max_model_len():
    proposer = FixedProposer([5, 6, 7, 8, 9])
    drafter = Drafter(proposer, num_speculative_tokens=5, max_model_len=12)
    short, long, prefill = decode(0, max_tokens=4), decode(1, prompt_len=8), decode(2)
    prefill.request.output_token_ids = []  # a chunk that does not reach the end samples nothing
    output = RunnerOutput({"r0": [3], "r1": [3]})
    drafter.propose([short, long, prefill], output)
    # r0: 4 - 2 outputs - 1 = 1 draft; r1: 12 - 10 tokens = 2 drafts
    assert proposer.calls == [[("r0", [1, 2, 3, 4, 5, 6, 7, 3], 1),
                               ("r1", [1, 2, 3, 4, 5, 6, 7, 8, 7, 3], 2)]]
    assert output.draft_token_ids == {"r0": [5], "r1": [5, 6]}


def test_no_drafts_above_disable_by_batch_size_nor_for_finished_grammars():
    proposer = FixedProposer([5, 6])
    drafter = Drafter(proposer, 2, max_model_len=64, disable_by_batch_size=1)
    output = RunnerOutput({"r0": [3], "r1": [3]})
    drafter.propose([decode(0), decode(1)], output)
    assert proposer.calls == [] and output.draft_token_ids == {}
    output = RunnerOutput({"r0": [3]}, grammar_finished={"r0"})
    drafter.propose([decode(0)], output)
    assert proposer.calls == [] and output.draft_token_ids == {}


def test_draft_distributions_are_kept_until_verified_and_released():
    drafter = Drafter(FixedProposer([5, 6, 7], vocab=10), 3, max_model_len=64)
    item = decode(0)
    output = RunnerOutput({"r0": [3]})
    drafter.propose([item], output)
    assert output.draft_token_ids == {"r0": [5, 6, 7]} and len(drafter) == 1
    verified = ScheduledRequest(item.request, 7, 3, [5, 6])  # the budget kept two drafts
    assert drafter.take_probs(verified).shape == (2, 10) and len(drafter) == 0
    drafter.propose([item], RunnerOutput({"r0": [3]}))
    drafter.propose([item], RunnerOutput())  # drafts the scheduler dropped are forgotten
    assert len(drafter) == 0
    drafter.propose([item], RunnerOutput({"r0": [3]}))
    drafter.release("r0")
    assert len(drafter) == 0 and drafter.proposer.released == ["r0"]


def test_a_request_that_can_draft_no_more_gives_back_its_state_first():
    proposer = FixedProposer([5, 6])
    drafter = Drafter(proposer, 2, max_model_len=64)
    done, going = decode(0, max_tokens=3), decode(1)
    drafter.propose([done, going], RunnerOutput({"r0": [3], "r1": [3]}))
    assert proposer.released == ["r0"] and [c[0] for c in proposer.calls[0]] == ["r1"]
