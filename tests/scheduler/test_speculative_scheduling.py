"""The scheduler with a proposer: 1 + k tokens per decode, rewinds, pages, stops."""

from __future__ import annotations

from toolkit.config.schema import SchedulerConfig, SpeculativeConfig
from toolkit.kv.block_manager import BlockManager
from toolkit.protocol import Request, RequestStatus, RunnerOutput, SamplingParams
from toolkit.speculative.base import Proposal, Proposer

EOS = 0
BLOCK_SIZE = 4


class FixedProposer(Proposer):
    """Proposes ``drafts`` (capped) for every request; records what it was asked."""

    def __init__(self, drafts: list[int]) -> None:
        self.drafts = drafts
        self.calls: list[list[tuple[str, int]]] = []
        self.released: list[str] = []

    def propose(self, requests, max_num_tokens):
        self.calls.append([(r.request_id, k) for r, k in zip(requests, max_num_tokens)])
        return [Proposal(self.drafts[:k]) if self.drafts else None for k in max_num_tokens]

    def release(self, request_id):
        self.released.append(request_id)


def make(proposer, num_speculative_tokens=3, disable_by_batch_size=None, max_model_len=64,
         budget=64, num_blocks=64):
    from toolkit.scheduler.scheduler import Scheduler

    spec = SpeculativeConfig(method="ngram", num_speculative_tokens=num_speculative_tokens,
                             disable_by_batch_size=disable_by_batch_size)
    config = SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=budget)
    block_manager = BlockManager(num_blocks, BLOCK_SIZE, enable_prefix_caching=False)
    return Scheduler(config, block_manager, max_model_len, proposer, spec)


def request(i: int, prompt_len: int = 6, max_tokens: int = 20, **kw) -> Request:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, eos_token_ids=(EOS,), **kw)
    return Request(f"r{i}", [10 + (i + j) % 7 for j in range(prompt_len)], params)


def step(scheduler, emitted: dict[str, list[int]]):
    output = scheduler.schedule()
    scheduler.update(output, RunnerOutput({k: list(v) for k, v in emitted.items()}))
    return output


def test_prefill_does_not_speculate_then_decode_gets_one_plus_k():
    proposer = FixedProposer([5, 6, 7, 8])
    scheduler = make(proposer)
    r = request(0)
    scheduler.add_request(r)
    first = step(scheduler, {"r0": [4]})
    assert first.scheduled[0].num_tokens == 6 and not first.scheduled[0].draft_token_ids
    assert proposer.calls == []  # nothing was decoding yet
    output = scheduler.schedule()
    [item] = output.scheduled
    assert (item.start, item.num_tokens, item.draft_token_ids) == (6, 4, [5, 6, 7])
    assert len(r.block_ids) == 3  # 6 + 1 + 3 = 10 slots
    # two drafts accepted, the third rejected: the target emitted 5, 6 and then 9
    scheduler.update(output, RunnerOutput({"r0": [5, 6, 9]}))
    assert r.output_token_ids == [4, 5, 6, 9]
    assert r.num_computed_tokens == 9  # 6 prompt + last token + 2 accepted drafts
    assert r.num_tokens - r.num_computed_tokens == 1
    assert len(r.block_ids) == 3  # the rejected slot stays allocated, to be overwritten


def test_all_rejected_and_all_accepted():
    scheduler = make(FixedProposer([5, 6, 7]))
    r = request(0)
    scheduler.add_request(r)
    step(scheduler, {"r0": [4]})
    step(scheduler, {"r0": [1]})  # every draft rejected
    assert r.output_token_ids == [4, 1] and r.num_computed_tokens == 7
    step(scheduler, {"r0": [5, 6, 7, 3]})  # all accepted plus the bonus
    assert r.output_token_ids == [4, 1, 5, 6, 7, 3] and r.num_computed_tokens == 11


def test_stop_token_in_the_middle_of_a_run_drops_the_rest_and_frees_pages():
    proposer = FixedProposer([5, 6, 7])
    scheduler = make(proposer)
    r = request(0)
    scheduler.add_request(r)
    step(scheduler, {"r0": [4]})
    step(scheduler, {"r0": [5, EOS, 7, 3]})
    assert r.output_token_ids == [4, 5, EOS]
    assert r.status == RequestStatus.FINISHED_STOPPED
    assert scheduler.block_manager.num_free_blocks == 64 and not scheduler.requests
    assert proposer.released == ["r0"]


def test_stop_token_ids_and_min_tokens_apply_token_by_token():
    scheduler = make(FixedProposer([5, 6, 7]))
    r = request(0, stop_token_ids=(6,), min_tokens=4)
    scheduler.add_request(r)
    step(scheduler, {"r0": [4]})
    step(scheduler, {"r0": [5, 6, 7, 6]})  # the first 6 is below min_tokens; the second stops
    assert r.output_token_ids == [4, 5, 6, 7, 6] and r.status == RequestStatus.FINISHED_STOPPED


def test_drafts_are_capped_by_max_tokens_and_max_model_len():
    proposer = FixedProposer([5, 6, 7, 8, 9])
    scheduler = make(proposer, num_speculative_tokens=5, max_model_len=12)
    short = request(0, max_tokens=3)
    long = request(1, prompt_len=9)
    scheduler.add_request(short)
    scheduler.add_request(long)
    step(scheduler, {"r0": [4], "r1": [4]})
    output = scheduler.schedule()
    assert proposer.calls[-1] == [("r0", 1), ("r1", 2)]  # 3 - 1 - 1; 12 - 10
    assert [s.num_tokens for s in output.scheduled] == [2, 3]
    scheduler.update(output, RunnerOutput({"r0": [5, 6], "r1": [5, 6, 8]}))
    assert short.output_token_ids == [4, 5, 6] and short.status == RequestStatus.FINISHED_LENGTH
    assert long.num_tokens == 12 and long.status == RequestStatus.FINISHED_LENGTH


def test_speculation_off_above_disable_by_batch_size():
    proposer = FixedProposer([5, 6])
    scheduler = make(proposer, disable_by_batch_size=1)
    for i in range(2):
        scheduler.add_request(request(i))
    step(scheduler, {"r0": [4], "r1": [4]})
    output = step(scheduler, {"r0": [1], "r1": [1]})
    assert proposer.calls == [] and all(s.num_tokens == 1 for s in output.scheduled)
    scheduler.finish_request("r1", RequestStatus.FINISHED_ABORTED)
    output = scheduler.schedule()
    assert [s.draft_token_ids for s in output.scheduled] == [[5, 6]]


def test_no_proposal_and_no_budget_fall_back_to_one_token():
    scheduler = make(FixedProposer([]))
    scheduler.add_request(request(0))
    step(scheduler, {"r0": [4]})
    assert [s.num_tokens for s in scheduler.schedule().scheduled] == [1]
    scheduler = make(FixedProposer([5, 6, 7]), budget=3)
    scheduler.add_request(request(0, prompt_len=3))
    step(scheduler, {"r0": [4]})
    assert [s.draft_token_ids for s in scheduler.schedule().scheduled] == [[5, 6]]


def test_drafts_are_dropped_when_pages_run_out():
    scheduler = make(FixedProposer([5, 6, 7]), num_blocks=2)
    r = request(0, prompt_len=7)
    scheduler.add_request(r)
    step(scheduler, {"r0": [4]})  # 8 tokens: both pages hold K/V or the next token
    [item] = scheduler.schedule().scheduled
    assert item.num_tokens == 1 and not item.draft_token_ids and len(r.block_ids) == 2


def test_run_to_completion_matches_the_non_speculative_tokens():
    """A fabricated target (token = f(length)) with a proposer that is right half the
    time produces exactly the tokens of plain decoding, with fewer steps."""
    def target(tokens):
        return 1 + (sum(tokens) * 7 + len(tokens)) % 13

    class HalfRight(Proposer):
        def propose(self, requests, max_num_tokens):
            out = []
            for r, k in zip(requests, max_num_tokens):
                tokens, drafts = list(r.all_token_ids), []
                for j in range(k):
                    drafts.append(target(tokens) if j % 2 == 0 else 99)
                    tokens.append(drafts[-1])
                out.append(Proposal(drafts))
            return out

    def run(scheduler):
        steps = 0
        while scheduler.num_unfinished:
            output = scheduler.schedule()
            emitted = {}
            for s in output.scheduled:
                if not s.samples:
                    continue
                tokens, got = list(s.request.all_token_ids), []
                for d in s.draft_token_ids + [None]:
                    got.append(target(tokens))
                    tokens.append(got[-1])
                    if got[-1] != d:
                        break
                emitted[s.request.request_id] = got
            scheduler.update(output, RunnerOutput(emitted))
            steps += 1
        return steps

    plain = make(None)
    spec = make(HalfRight(), num_speculative_tokens=4)
    requests = {name: [request(i, max_tokens=15) for i in range(3)] for name in ("a", "b")}
    for r in requests["a"]:
        plain.add_request(r)
    for r in requests["b"]:
        spec.add_request(r)
    assert run(spec) < run(plain)
    for a, b in zip(requests["a"], requests["b"]):
        assert a.output_token_ids == b.output_token_ids
    assert spec.block_manager.num_free_blocks == 64
