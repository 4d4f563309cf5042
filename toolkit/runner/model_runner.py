"""Executes one scheduled step: build the batch, plan attention, run the model, sample."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

import torch

from toolkit.attention.base import AttentionBackend
from toolkit.attention.forward_batch import ForwardBatch
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.protocol import Request, RunnerOutput, SchedulerOutput, TokenLogprobs
from toolkit.protocol.outputs import ScheduledRequest
from toolkit.runner.acceptance import AcceptanceMethod, RejectionSampler
from toolkit.runner.batch_builder import build_forward_batch, lora_token_slots
from toolkit.runner.logits_processors import TokenHistory
from toolkit.runner.logprobs import token_logprobs
from toolkit.runner.multimodal import ImageEmbeddingCache
from toolkit.runner.sampler import sample
from toolkit.runner.verify import VerifyRow, verify_drafts

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from toolkit.guided.matchers import GrammarMatchers
    from toolkit.lora.manager import LoraManager
    from toolkit.runner.cuda_graph_runner import CudaGraphRunner
    from toolkit.runner.drafter import Drafter


logger = logging.getLogger(__name__)


class TensorParallelWorkers(Protocol):
    """The driver's handle on the other ranks of a tensor-parallel group
    (toolkit.parallel.executor implements it); each call is matched by this rank's own."""

    def forward(self, batch: ForwardBatch) -> None:
        """Have every worker plan ``batch`` and run its model shard's forward on it."""

    def run_forward(self, model: torch.nn.Module, attention: AttentionBackend,
                    batch: ForwardBatch) -> torch.Tensor:
        """This rank's own part of the forward just told (planned and run as every rank
        runs it: in the same micro-batches) -> hidden [T, H]."""

    def logits(self, rows: torch.Tensor | slice) -> None:
        """Have every worker run its LM head shard on rows ``rows`` of its last forward."""

    def collective(self, what: str) -> AbstractContextManager[None]:
        """A context in which any failure is a WorkerFault naming ``what``."""



class WorkerFault(RuntimeError):
    """A tensor-parallel step that failed or lost a worker: the ranks' collectives are out
    of step, so no request owns it and the engine stops."""


ENGINE_FAULTS: tuple[type[BaseException], ...] = (MemoryError, torch.OutOfMemoryError,
                                                  WorkerFault)
"""Failures no single request owns, even inside its own work: they are never pinned on a
request but raised (the engine loop then stops)."""

SEED_STRIDE = 0x9E3779B97F4A7C15
"""Output token n of a request seeded s draws from a generator seeded s + n * SEED_STRIDE
(mod 2^64): the golden-ratio increment of splitmix64, so neighbouring tokens' seeds are far
apart."""


class ModelRunner:
    """Owns the model and the attention backend; samples, verifies drafts and, with a
    drafter, proposes the next step's drafts.

    A seeded request's n-th output token is drawn from a generator keyed by its seed and n
    alone, so the draw depends on nothing else in the step (the batch, a preemption, how
    many drafts were verified). ``exact_seeded_drafts``: drafts of seeded requests are
    accepted only while they equal those draws, so speculation emits exactly the tokens
    plain decoding would (device.deterministic); otherwise ``acceptance`` verifies them.
    """

    def __init__(self, model: torch.nn.Module, attention: AttentionBackend, page_size: int,
                 device: torch.device | str, acceptance: AcceptanceMethod | None = None,
                 graph_runner: CudaGraphRunner | None = None,
                 exact_seeded_drafts: bool = False, drafter: Drafter | None = None,
                 lora: LoraManager | None = None,
                 workers: TensorParallelWorkers | None = None,
                 kernels: KernelRoute = TORCH) -> None:
        self.model = model
        self.kernels = kernels
        """The runtime's CPU kernel route (the sampler's greedy argmax takes it)."""
        self.lora = lora
        """Serves LoRA adapters (each request's ``lora_name``) in the model's projections;
        None: the base model only."""
        self.workers = workers
        """The other tensor-parallel ranks, told each forward and LM head call before this
        rank (0) runs its own part of it; None: the model is whole here."""
        self.drafter = drafter
        """Proposes drafts after sampling (speculative decoding); None: no speculation."""
        self.exact_seeded_drafts = exact_seeded_drafts
        self.graph_runner = graph_runner
        """Replays decode steps from CUDA graphs (None: every step runs eagerly)."""
        self.acceptance = acceptance or RejectionSampler()
        """How sampled requests' drafts are verified (greedy ones: by argmax match)."""
        self.attention = attention
        self.page_size = page_size
        self.device = device
        self._grammars: GrammarMatchers | None = None
        self.images = (ImageEmbeddingCache(model, device)
                       if hasattr(model, "encode_images") else None)
        """Encodes requests' images and keeps their embeddings through the prefill (a
        vision-language model); None for a text model."""

    @property
    def accepts_images(self) -> bool:
        """True when the model takes image embeddings (requests may carry images)."""
        return self.images is not None

    @torch.inference_mode()
    def execute(self, scheduler_output: SchedulerOutput) -> RunnerOutput:
        """Run one step: the batch's forward, then each request's own work (prompt
        logprobs, sampling or draft verification, logprobs, its grammar), then the next
        step's drafts.

        Fault isolation: a request whose own work raises is listed in
        ``RunnerOutput.failed`` with no results, and the other requests' results are the
        ones they get in a step without it (exactly, for greedy and seeded requests: an
        unseeded draw depends on the global generator). Batched sampling that raises is
        redone request by request to find the culprits. What no request owns raises:
        building the batch, the forward, the LM head, and ``ENGINE_FAULTS`` (memory
        exhausted) anywhere."""
        scheduled = scheduler_output.scheduled
        if self.drafter is not None:
            for request_id in scheduler_output.preempted_ids:
                self.drafter.release(request_id)
        batch = build_forward_batch(scheduled, self.page_size, self.device)
        hidden = self._forward_with_adapters(batch, scheduled)  # [T, H]
        output = RunnerOutput()
        sampling = [s for s in scheduled if s.samples]
        if sampling:
            # [M, V] float32; M = sum(1 + k_i): one row per position that gets a token
            logits = self._logits(hidden, batch.logits_indices)
            self._emit_isolated(sampling, logits, output)
        self._add_prompt_logprobs(scheduled, hidden, batch, output)
        if self._grammars:
            self._accept_grammars(output)
        if self.drafter is not None:
            self._draft(scheduled, output)
        return output

    def _draft(self, scheduled: list[ScheduledRequest], output: RunnerOutput) -> None:
        """The next step's drafts into ``output``; a proposer that raises costs this
        step's drafts only (speculation never changes which tokens a request gets)."""
        try:
            self.drafter.propose(scheduled, output)
        except ENGINE_FAULTS:
            raise
        except Exception:
            logger.exception("drafting failed; the next step runs without drafts")
            output.draft_token_ids.clear()

    def _emit_isolated(self, sampling: list[ScheduledRequest], logits: torch.Tensor,
                       output: RunnerOutput) -> None:
        """``_emit`` for the whole batch; when that raises, request by request."""
        try:
            self._emit(sampling, logits, output)
        except ENGINE_FAULTS:
            raise
        except Exception:
            logger.exception("sampling a batch of %d requests failed; redoing it request by "
                             "request", len(sampling))
            self._emit_each(sampling, logits, output)

    def _emit(self, sampling: list[ScheduledRequest], logits: torch.Tensor,
              output: RunnerOutput) -> None:
        """Sample (or verify the drafts of) ``sampling``, whose logits rows are
        ``logits``, into ``output`` with their logprobs; ``output`` is left as it was
        when this raises."""
        if any(s.draft_token_ids for s in sampling):
            emitted = self._verify(sampling, logits)
        else:
            emitted = self._sample([s.request for s in sampling], logits)
        logprobs = self._logprobs(sampling, logits, emitted)
        output.sampled_token_ids.update(emitted)
        output.logprobs.update(logprobs)

    def _emit_each(self, sampling: list[ScheduledRequest], logits: torch.Tensor,
                   output: RunnerOutput) -> None:
        """``_emit`` request by request, on each one's own logits rows; a request that
        still raises is failed."""
        first_row = 0
        for item in sampling:
            rows = slice(first_row, first_row + item.num_draft_tokens + 1)
            first_row = rows.stop
            try:
                self._emit([item], logits[rows], output)
            except ENGINE_FAULTS:
                raise
            except Exception:
                logger.exception("sampling request %s failed", item.request.request_id)
                output.fail(item.request.request_id, "sampling")

    def _accept_grammars(self, output: RunnerOutput) -> None:
        """Advance the guided requests' matchers by their emitted tokens; a request whose
        matcher raises is failed (its matcher is released with it)."""
        for request_id, tokens in list(output.sampled_token_ids.items()):
            try:
                if self._grammars.accept_run(request_id, tokens):
                    output.grammar_finished.add(request_id)
            except ENGINE_FAULTS:
                raise
            except Exception:
                logger.exception("the grammar of request %s failed", request_id)
                output.fail(request_id, "the grammar")

    def _forward_with_adapters(self, batch: ForwardBatch,
                               scheduled: list[ScheduledRequest]) -> torch.Tensor:
        """``_forward`` with each row's LoRA adapter (if any) in the projections."""
        if self.lora is None:
            return self._forward(batch, scheduled)
        slot_of = self.lora.activate([(s.request.request_id, s.request.lora_name)
                                      for s in scheduled])
        self.lora.batch.set(lora_token_slots(scheduled, slot_of), self.device)
        try:
            return self._forward(batch, scheduled)
        finally:
            self.lora.batch.clear()

    def _has_adapter_rows(self) -> bool:
        """True when a row of the running step has a LoRA adapter (CUDA graphs are
        captured without)."""
        return self.lora is not None and self.lora.batch.slots is not None

    def _forward(self, batch: ForwardBatch,
                 scheduled: list[ScheduledRequest] | None = None) -> torch.Tensor:
        """hidden [T, H]: replayed from a CUDA graph when the batch qualifies, else eager;
        with image tokens in the step, their embeddings merged in."""
        image_embeds = None
        if self.images is not None and scheduled:
            image_embeds = self.images.gather(scheduled, batch.qo_indptr.tolist())
        if image_embeds is None and self.graph_runner is not None and \
                self.graph_runner.can_run(batch) and not self._has_adapter_rows():
            return self.graph_runner.run(batch)
        if self.workers is None:
            self.attention.plan(batch)
            if image_embeds is not None:
                return self.model(batch.input_ids, batch.positions, self.attention,
                                  image_embeds=image_embeds)
            return self.model(batch.input_ids, batch.positions, self.attention)
        with self.workers.collective("the forward"):
            self.workers.forward(batch)
            return self.workers.run_forward(self.model, self.attention, batch)

    def _logits(self, hidden: torch.Tensor, rows: torch.Tensor | slice) -> torch.Tensor:
        """[N, V] float32 logits of ``hidden[rows]`` (every rank's LM head shard when
        tensor-parallel)."""
        if self.workers is None:
            return self.model.compute_logits(hidden[rows])
        with self.workers.collective("the LM head"):
            self.workers.logits(rows)
            return self.model.compute_logits(hidden[rows])

    def _sample(self, sampling: list[Request], logits: torch.Tensor) -> dict[str, list[int]]:
        """One token per request (no drafts this step)."""
        params = [r.sampling_params for r in sampling]
        generators = [self._generator(r) for r in sampling]
        histories = [TokenHistory(r.prompt_token_ids, r.output_token_ids) for r in sampling]
        ids = [r.request_id for r in sampling]
        grammar = self._grammars.fill(ids, logits.shape[1]) if self._grammars else None
        token_ids = sample(logits, params, generators, histories, grammar,
                           kernels=self.kernels).tolist()
        return {rid: [token] for rid, token in zip(ids, token_ids)}

    def _verify(self, sampling: list[ScheduledRequest],
                logits: torch.Tensor) -> dict[str, list[int]]:
        """Accepted drafts plus one recovered or bonus token per request."""
        rows = [VerifyRow(s.request.sampling_params,
                          TokenHistory(s.request.prompt_token_ids, s.request.output_token_ids),
                          s.draft_token_ids, self._draft_probs(s), self._generator(s.request),
                          self._position_generators(s))
                for s in sampling]
        grammar = None
        if self._grammars:
            grammar = self._grammars.fill_with_drafts(
                [s.request.request_id for s in sampling], [s.draft_token_ids for s in sampling],
                logits.shape[1])
        emitted = verify_drafts(logits, rows, self.acceptance, grammar)
        return {s.request.request_id: tokens for s, tokens in zip(sampling, emitted)}

    def _draft_probs(self, item: ScheduledRequest) -> torch.Tensor | None:
        """[k, V] distributions of ``item``'s scheduled drafts; None for point masses."""
        if self.drafter is None or not item.draft_token_ids:
            return None
        return self.drafter.take_probs(item)

    @staticmethod
    def _logprobs(sampling: list[ScheduledRequest], logits: torch.Tensor,
                  emitted: dict[str, list[int]]) -> dict[str, list[TokenLogprobs]]:
        """Each emitted token's logprobs from the raw logits of the position it was
        emitted at, for the requests that asked; one batched call."""
        rows, tokens, num_top, owners = [], [], [], []
        offset = 0
        for item in sampling:
            request = item.request
            asked = request.sampling_params.logprobs
            got = emitted.get(request.request_id, [])
            if asked is not None and got:
                rows.extend(range(offset, offset + len(got)))
                tokens.extend(got)
                num_top.extend([asked] * len(got))
                owners.append((request.request_id, len(got)))
            offset += item.num_draft_tokens + 1
        if not rows:
            return {}
        entries = token_logprobs(logits[rows], torch.tensor(tokens), num_top)
        result, start = {}, 0
        for request_id, count in owners:
            result[request_id] = entries[start:start + count]
            start += count
        return result

    def _add_prompt_logprobs(self, scheduled: list[ScheduledRequest], hidden: torch.Tensor,
                             batch: ForwardBatch, output: RunnerOutput) -> None:
        """Logprobs of the prompt tokens each prefill chunk predicts (position p predicts
        token p + 1), for requests that asked and have no output yet (so a recompute after
        preemption is not reported twice). A request whose computation raises is failed."""
        for item, start_row in zip(scheduled, batch.qo_indptr.tolist()):
            request_id = item.request.request_id
            try:
                entries = self._prompt_logprobs(item, hidden, start_row)
            except ENGINE_FAULTS:
                raise
            except Exception:
                logger.exception("the prompt logprobs of request %s failed", request_id)
                output.fail(request_id, "prompt logprobs")
                continue
            if entries is not None:
                output.prompt_logprobs[request_id] = entries

    def _prompt_logprobs(self, item: ScheduledRequest, hidden: torch.Tensor,
                         start_row: int) -> tuple[int, list[TokenLogprobs]] | None:
        """(first prompt token covered, logprobs) of one chunk whose hidden rows start at
        ``start_row``; None when it has none to report."""
        request, first = item.request, item.start + 1
        asked = request.sampling_params.prompt_logprobs
        count = min(item.num_tokens, request.num_prompt_tokens - first)
        if asked is None or request.num_output_tokens or count <= 0:
            return None
        logits = self._logits(hidden, slice(start_row, start_row + count))
        targets = torch.tensor(request.prompt_token_ids[first:first + count])
        return first, token_logprobs(logits, targets, [asked] * count)

    def add_grammar(self, request_id: str, grammar, stop_token_ids: tuple[int, ...]) -> None:
        """Guide ``request_id``'s sampling by ``grammar`` (an xgrammar CompiledGrammar)."""
        if self._grammars is None:
            from toolkit.guided.matchers import GrammarMatchers

            self._grammars = GrammarMatchers()
        self._grammars.add(request_id, grammar, stop_token_ids)

    def release(self, request_id: str) -> None:
        """Forget a finished request's grammar matcher and drafting state."""
        if self._grammars is not None:
            self._grammars.release(request_id)
        if self.drafter is not None:
            self.drafter.release(request_id)
        if self.images is not None:
            self.images.release(request_id)
        if self.lora is not None:
            self.lora.release(request_id)

    @property
    def num_request_states(self) -> dict[str, int]:
        """Grammar matchers and drafting state still held; all 0 when no request is in
        flight."""
        return {"grammars": len(self._grammars) if self._grammars else 0,
                "drafter": len(self.drafter) if self.drafter is not None else 0,
                "image_embeddings": len(self.images) if self.images is not None else 0,
                "lora_pins": self.lora.num_pinned if self.lora is not None else 0}

    def _generator(self, request: Request, offset: int = 0) -> torch.Generator | None:
        """The generator of ``request``'s output token num_output_tokens + offset; None
        for an unseeded request (it draws from torch's global generator)."""
        seed = request.sampling_params.seed
        if seed is None:
            return None
        index = request.num_output_tokens + offset
        return torch.Generator(self.device).manual_seed((seed + index * SEED_STRIDE) % 2**64)

    def _position_generators(self, item: ScheduledRequest) -> list[torch.Generator] | None:
        """One generator per verified position (plain decoding's draws) where seeded drafts
        are verified exactly, else None."""
        if not self.exact_seeded_drafts or item.request.sampling_params.seed is None:
            return None
        return [self._generator(item.request, j) for j in range(item.num_draft_tokens + 1)]
