"""Parity harness for one architecture: a tiny random checkpoint written by transformers,
run through our loader and paged KV cache (hand-made steps) and through a real engine
(scheduler, chunked prefill, sampler), each compared with transformers in float32.

Used by tests/models/test_qwen3.py and test_phi3.py; any architecture whose transformers
config class builds a tiny model can use it.
"""

from __future__ import annotations

import json
import pathlib

import torch
import transformers
from paged_batch import build_forward_batch

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model, read_model_info
from toolkit.protocol import SamplingParams

PAGE_SIZE = 4
VOCAB_SIZE = 96
BOS, EOS = 1, 2
ATOL = RTOL = 1e-4


def write_word_tokenizer(directory: pathlib.Path, vocab_size: int = VOCAB_SIZE) -> None:
    """A whitespace word-level tokenizer over ``w0 ..`` (no download, loads fast)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": BOS, "</s>": EOS,
             **{f"w{i}": i + 3 for i in range(vocab_size - 3)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>"}))


def save_random_checkpoint(config: transformers.PretrainedConfig,
                           directory: pathlib.Path, head_scale: float = 1.0):
    """Build ``config``'s model with seeded random weights, perturb the norms and biases
    (random init leaves them at 1 and 0), scale an untied LM head by ``head_scale`` (clear
    greedy margins), save it with a word tokenizer; -> the transformers model (eval)."""
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
        if not config.tie_word_embeddings:
            model.lm_head.weight.mul_(head_scale)
    model.save_pretrained(directory)
    write_word_tokenizer(directory, config.vocab_size)
    return model


def paged_model(model_dir: pathlib.Path, kernels: KernelRoute = TORCH,
                num_pages: int = 64, max_model_len: int | None = None):
    """(our model from the real loader, a torch_ref backend over a fresh float32 pool)."""
    model = load_model(model_dir, torch.float32, "cpu", kernels=kernels,
                       max_model_len=max_model_len)
    info = read_model_info(model_dir)
    pool = KVCachePool(info.num_layers, num_pages=num_pages, page_size=PAGE_SIZE,
                       num_kv_heads=info.num_kv_heads, head_dim=info.head_dim,
                       dtype=torch.float32)
    attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim,
                           kernels=kernels)
    return model, attn


def step_logits(model, attn, requests) -> torch.Tensor:
    """requests: (new tokens, start, pages) -> [B, vocab] logits of each one's last token."""
    batch = build_forward_batch(requests, PAGE_SIZE)
    attn.plan(batch)
    with torch.no_grad():
        hidden = model(batch.input_ids, batch.positions, attn)
        return model.compute_logits(hidden[batch.logits_indices])


def reference_logits(hf_model, tokens: list[int]) -> torch.Tensor:
    """[len(tokens), vocab] float32 logits of transformers over the whole sequence."""
    with torch.no_grad():
        return hf_model(torch.tensor([tokens])).logits[0].float()


def paged_prefill_then_decode(model, attn, tokens: list[int], prompt_len: int,
                              chunk: int | None = None) -> torch.Tensor:
    """Prefill ``tokens[:prompt_len]`` (in chunks of ``chunk`` tokens when given), then
    decode the rest one token a step -> [len(tokens) - prompt_len + 1, vocab] logits of
    the positions prompt_len - 1 ...; the request's pages are scattered in the pool."""
    num_pages = -(-len(tokens) // PAGE_SIZE)
    pages = [(7 * i + 3) % attn.kv_pool.num_pages for i in range(num_pages)]
    assert len(set(pages)) == num_pages, "pool too small for scattered pages"
    chunk = chunk or prompt_len
    for start in range(0, prompt_len, chunk):
        end = min(start + chunk, prompt_len)
        last = step_logits(model, attn, [(tokens[start:end], start, pages)])[0]
    logits = [last]
    for position in range(prompt_len, len(tokens)):
        logits.append(step_logits(model, attn, [(tokens[position:position + 1], position,
                                                 pages)])[0])
    return torch.stack(logits)


def hf_greedy(hf_model, prompt: list[int], max_tokens: int) -> list[int]:
    """transformers' generate, greedy, never stopping early."""
    with torch.no_grad():
        out = hf_model.generate(torch.tensor([prompt]), max_new_tokens=max_tokens,
                                min_new_tokens=max_tokens, do_sample=False,
                                pad_token_id=EOS)
    return out[0, len(prompt):].tolist()


def build_engine(model_dir: pathlib.Path, overrides: list[str] = ()):
    """A real runtime (build_runtime, model.path=model_dir, float32, CPU) and its core."""
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    runtime = build_runtime(compose_config([
        "device=cpu", f"model.path={model_dir}", "model.dtype=float32",
        f"cache.page_size={PAGE_SIZE}", "cache.num_pages=64", *overrides]))
    return runtime


def engine_greedy(runtime, prompt: list[int], max_tokens: int, num_logprobs: int = 3):
    """Run one greedy request to the end on ``runtime``'s core -> (tokens, the sampled
    tokens' TokenLogprobs, the prompt's TokenLogprobs (None first))."""
    core = runtime.core
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True,
                            logprobs=num_logprobs, prompt_logprobs=num_logprobs)
    core.add_request("parity", prompt, params)
    tokens, logprobs, prompt_logprobs = [], [], None
    while core.has_unfinished:
        for output in core.step():
            tokens += output.new_token_ids
            logprobs += output.logprobs or []
            if output.prompt_logprobs is not None:
                prompt_logprobs = output.prompt_logprobs
    return tokens, logprobs, prompt_logprobs


def assert_logprobs_match(entries, reference: torch.Tensor) -> None:
    """entries[i] (TokenLogprobs of a token, with its top alternatives) against
    ``reference[i]`` (transformers' logits that predicted it): the token's logprob and
    the top alternatives' ids and logprobs."""
    log_probs = reference.log_softmax(-1)
    for entry, row in zip(entries, log_probs, strict=True):
        assert abs(entry.logprob - row[entry.token_id].item()) < ATOL * 10
        top = row.topk(len(entry.top))
        assert [t for t, _ in entry.top] == top.indices.tolist()
        torch.testing.assert_close(torch.tensor([lp for _, lp in entry.top]), top.values,
                                   atol=ATOL * 10, rtol=RTOL)


def check_engine_parity(hf_model, model_dir: pathlib.Path, prompt: list[int],
                        max_tokens: int, overrides: list[str] = ()):
    """A real engine over ``model_dir`` generates transformers' greedy tokens, with the
    prompt's and the outputs' logprobs (top 3 each) equal to transformers' -> (the tokens,
    the runtime's ResolvedConfig)."""
    runtime = build_engine(model_dir, overrides)
    try:
        tokens, logprobs, prompt_logprobs = engine_greedy(runtime, prompt, max_tokens)
    finally:
        runtime.core.guided.close()  # its compile workers are processes
    assert tokens == hf_greedy(hf_model, prompt, max_tokens)
    reference = reference_logits(hf_model, prompt + tokens)
    assert prompt_logprobs[0] is None
    assert_logprobs_match(prompt_logprobs[1:], reference[:len(prompt) - 1])
    assert_logprobs_match(logprobs, reference[len(prompt) - 1:-1])
    return tokens, runtime.resolved
