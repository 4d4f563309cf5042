"""SmolLM2-135M-Instruct from the packaged GGUF vs transformers' own GGUF loader."""

from __future__ import annotations

import pathlib

import pytest
import torch
from paged_batch import build_forward_batch

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kernels.route import KernelRoute
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model, read_model_info

PAGE_SIZE = 16
NUM_NEW_TOKENS = 32
PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(smollm2_gguf_path: pathlib.Path):
    """transformers' model and tokenizer read straight from the GGUF (float32)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = smollm2_gguf_path
    kwargs = dict(gguf_file=gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), dtype=torch.float32,
                                                 **kwargs).eval()
    return model, tokenizer


def _greedy_with_paged_kv(model_dir: pathlib.Path, prompts: list[list[int]],
                          kernels: KernelRoute) -> tuple[list[list[int]], torch.Tensor]:
    """All prompts prefilled in one step, then batched decode steps, the model and its
    attention built with the CPU kernel route ``kernels``.

    Returns the greedy tokens per prompt and the logits that chose them [B, steps, vocab].
    """
    info = read_model_info(model_dir)
    model = load_model(model_dir, torch.float32, "cpu", kernels=kernels)
    pages_per_request = -(-(max(map(len, prompts)) + NUM_NEW_TOKENS) // PAGE_SIZE)
    pool = KVCachePool(info.num_layers, len(prompts) * pages_per_request + 1, PAGE_SIZE,
                       info.num_kv_heads, info.head_dim, torch.float32)
    attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim,
                           kernels=kernels)
    pages = [list(range(pool.num_pages - 1 - i * pages_per_request,
                        pool.num_pages - 1 - (i + 1) * pages_per_request, -1))
             for i in range(len(prompts))]  # descending, non-contiguous across requests
    generated: list[list[int]] = [[] for _ in prompts]
    step_logits = []
    step = [(tokens, 0, request_pages) for tokens, request_pages in zip(prompts, pages)]
    with torch.no_grad():
        for _ in range(NUM_NEW_TOKENS):
            batch = build_forward_batch(step, PAGE_SIZE)
            attn.plan(batch)
            hidden = model(batch.input_ids, batch.positions, attn)
            step_logits.append(model.compute_logits(hidden[batch.logits_indices]))
            next_ids = step_logits[-1].argmax(-1).tolist()
            for out, token in zip(generated, next_ids):
                out.append(token)
            step = [([token], start + len(tokens), request_pages)
                    for token, (tokens, start, request_pages) in zip(next_ids, step)]
    return generated, torch.stack(step_logits, dim=1)


def test_greedy_continuations_match_transformers(smollm2_dir: pathlib.Path, reference,
                                                  native_kernels):
    """transformers, fed prompt + our continuation, picks the same greedy token at every step
    (so its own greedy decoding would produce the same text) with matching logits; on the
    native CPU kernels, the route a CPU runtime resolves to."""
    hf_model, tokenizer = reference
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    ours, our_logits = _greedy_with_paged_kv(smollm2_dir, prompts, native_kernels)
    for prompt, continuation, logits in zip(prompts, ours, our_logits):
        with torch.no_grad():
            full = hf_model(torch.tensor([prompt + continuation])).logits[0].float()
        expected = full[len(prompt) - 1:-1]  # [steps, vocab]: the logits that chose each token
        assert expected.argmax(-1).tolist() == continuation
        torch.testing.assert_close(logits, expected, atol=3e-4, rtol=1e-5)


def test_converted_tokenizer_and_chat_template(smollm2_dir: pathlib.Path, reference):
    from transformers import AutoTokenizer

    _, gguf_tokenizer = reference
    converted = AutoTokenizer.from_pretrained(str(smollm2_dir))
    for text in PROMPTS + ["  spaces\tand\nnewlines, émojis 🤗 and 12345"]:
        assert converted(text)["input_ids"] == gguf_tokenizer(text)["input_ids"]
    messages = [{"role": "user", "content": "Hi there"}]
    rendered = converted.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == gguf_tokenizer.apply_chat_template(messages, tokenize=False,
                                                          add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n")


def test_model_info_of_the_converted_model(smollm2_dir: pathlib.Path):
    info = read_model_info(smollm2_dir)
    assert (info.architecture, info.num_layers, info.hidden_size) == ("LlamaForCausalLM", 30, 576)
    assert (info.num_qo_heads, info.num_kv_heads, info.head_dim) == (9, 3, 64)
    assert info.vocab_size == 49152 and info.eos_token_ids == (2,) and info.bos_token_id == 1


def test_conversion_is_reused(smollm2_dir: pathlib.Path, smollm2_source: str):
    from toolkit.models.source import resolve_model_dir

    before = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert resolve_model_dir(smollm2_source) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == before
