"""The draft-model proposer: its KV state after rejections equals a fresh prefill, its
pages come back, and sampled drafts carry their q."""

from __future__ import annotations

import pytest
import torch
from tiny_models import write_tiny_llama

from toolkit.config.schema import ModelConfig, SpeculativeConfig
from toolkit.protocol import Request, SamplingParams
from toolkit.runner.proposer import DraftRequest
from toolkit.runtime import load_draft
from toolkit.speculative.base import ProposerContext
from toolkit.speculative.registry import build_proposer

VOCAB = 256
NUM_PAGES = 16


@pytest.fixture(scope="module")
def draft_dir(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("draft"), VOCAB, seed=11)


def proposer(draft_dir, dtype="float32"):
    config = SpeculativeConfig(method="draft",
                               draft_model=ModelConfig(path=str(draft_dir), dtype=dtype))
    model, attention = load_draft(config, "cpu", "torch_ref", NUM_PAGES, 4)
    return build_proposer(config, ProposerContext("cpu", NUM_PAGES, 4, VOCAB + 8, model,
                                                  attention))


def draft(request: Request, max_num_tokens: int) -> list[DraftRequest]:
    return [DraftRequest(request.request_id, request.all_token_ids, request.sampling_params,
                         max_num_tokens)]


def test_rewound_state_proposes_what_a_fresh_prefill_proposes(draft_dir):
    greedy = SamplingParams(temperature=0.0)
    stateful = proposer(draft_dir)
    request = Request("r", [5, 17, 33, 2, 90, 41, 7], greedy)
    [first] = stateful.propose(draft(request, 3))
    assert len(first.token_ids) == 3 and first.probs is None
    # the target accepted the first draft, rejected the second and emitted its own token
    other = (first.token_ids[1] + 1) % VOCAB
    request.output_token_ids += [first.token_ids[0], other]
    [second] = stateful.propose(draft(request, 4))
    [fresh] = proposer(draft_dir).propose(draft(request, 4))
    assert second.token_ids == fresh.token_ids
    # an all-accepted run (plus a bonus) also lines up
    request.output_token_ids += [*second.token_ids, 3]
    [third] = stateful.propose(draft(request, 2))
    assert third.token_ids == proposer(draft_dir).propose(draft(request, 2))[0].token_ids
    stateful.release("r")
    assert len(stateful) == 0 and stateful.pages.num_free_pages == NUM_PAGES


def test_sampled_drafts_keep_q_on_the_target_vocab_and_run_out_of_pages_gracefully(draft_dir):
    sampled = SamplingParams(temperature=0.8, top_k=20, seed=4)
    drafter = proposer(draft_dir, dtype="bfloat16")
    request = Request("s", list(range(10, 20)), sampled)
    [proposal] = drafter.propose(draft(request, 3))
    assert proposal.probs.shape == (3, VOCAB + 8)
    assert torch.allclose(proposal.probs.sum(-1), torch.ones(3))
    assert (proposal.probs[:, VOCAB:] == 0).all()
    assert all(proposal.probs[i, t] > 0 for i, t in enumerate(proposal.token_ids))
    assert ((proposal.probs > 0).sum(-1) <= 20).all()  # the request's top_k shaped q
    huge = Request("h", list(range(NUM_PAGES * 4 + 1)), sampled)
    assert drafter.propose(draft(huge, 2)) == [None]
    assert len(drafter) == 1  # the failed request holds nothing
