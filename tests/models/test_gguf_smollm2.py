"""The embedded SmolLM2 GGUF (Q4_1 projections, Q8_0 embedding) served as it is
(model.path=<the .gguf>) against the converted-safetensors route of the same file (slow:
loads SmolLM2 through both)."""

from __future__ import annotations

import pathlib

import pytest
import torch
from paged_batch import build_forward_batch

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model, read_model_info
from toolkit.models.source import resolve_model_dir
from toolkit.protocol import SamplingParams
from toolkit.quant import awq_cpu
from toolkit.quant.q4_1 import to_int4pack, unpack_gguf_q4_1

PAGE_SIZE = 16
PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time"]


@pytest.fixture(scope="module")
def direct_dir(smollm2_gguf_path: pathlib.Path) -> pathlib.Path:
    return resolve_model_dir("unused", str(smollm2_gguf_path))


def _runtime(model_path: pathlib.Path, *overrides: str):
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    return build_runtime(compose_config([
        "device=cpu", f"model.path={model_path}", "model.max_model_len=256",
        "cache.num_pages=64", *overrides]))


def _greedy(runtime, max_tokens: int = 16) -> list[list[int]]:
    core, tokenizer = runtime.core, runtime.tokenizer
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    tokens = {str(i): [] for i in range(len(PROMPTS))}
    for request_id, prompt in zip(tokens, PROMPTS):
        core.add_request(request_id, tokenizer.encode(prompt), params)
    while core.has_unfinished:
        for output in core.step():
            tokens[output.request_id] += output.new_token_ids
    return list(tokens.values())


def test_the_file_describes_the_same_model(direct_dir, smollm2_dir):
    assert read_model_info(direct_dir) == read_model_info(smollm2_dir)
    assert (direct_dir / "model.gguf").is_symlink()
    assert not any(direct_dir.glob("*.safetensors"))


def test_greedy_output_equals_the_converted_route(direct_dir, smollm2_dir):
    """Dequantized at load (quant=none, float32) the file gives the converted weights bit
    for bit, so the same engine generates the same tokens."""
    overrides = ("model.dtype=float32", "quant=none", "device.cpu_kernels=torch")
    direct = _runtime(direct_dir.joinpath("model.gguf").resolve(), *overrides)
    converted = _runtime(smollm2_dir, *overrides)
    assert direct.tokenizer.chat_template == converted.tokenizer.chat_template
    assert [direct.tokenizer.encode(p) for p in PROMPTS] == [
        converted.tokenizer.encode(p) for p in PROMPTS]
    assert _greedy(direct) == _greedy(converted)


def _prefill_logits(model, info, prompt: list[int]) -> torch.Tensor:
    """Logits [vocab] after ``prompt``, one prefill step through the torch reference
    attention over a paged KV cache."""
    num_pages = -(-len(prompt) // PAGE_SIZE)
    pool = KVCachePool(info.num_layers, num_pages + 1, PAGE_SIZE, info.num_kv_heads,
                       info.head_dim, torch.float32)
    attn = TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
    batch = build_forward_batch([(prompt, 0, list(range(num_pages)))], PAGE_SIZE)
    attn.plan(batch)
    with torch.no_grad():
        hidden = model(batch.input_ids, batch.positions, attn)
        return model.compute_logits(hidden[batch.logits_indices])[0]


def test_packed_q4_1_route_is_the_same_model(direct_dir, smollm2_dir):
    """quant=auto serves the file's Q4_1 blocks with the q4_1 method: float32 logits agree
    with the dequantized converted model, and in bfloat16 the int4 kernel holds the file's
    codes as they are."""
    info = read_model_info(direct_dir)
    packed, dense = (load_model(d, torch.float32, "cpu", prepack_weights=False)
                     for d in (direct_dir, smollm2_dir))
    assert (packed.quant_method.name, dense.quant_method.name) == ("q4_1", "none")
    prompt = [1, 504, 3575, 282, 4649, 314, 2, 1]
    torch.testing.assert_close(_prefill_logits(packed, info, prompt),
                               _prefill_logits(dense, info, prompt), rtol=0, atol=2e-3)
    del packed, dense

    model = load_model(direct_dir, torch.bfloat16, "cpu")
    down = model.layers[7].down_proj
    if not awq_cpu.can_use_int4pack(down.out_features, 32, torch.bfloat16, down.weight.device):
        pytest.skip("no int4 kernel on this CPU")
    from gguf import GGUFReader

    reader = GGUFReader(str(direct_dir / "model.gguf"))
    blocks = next(t.data for t in reader.tensors if t.name == "blk.7.ffn_down.weight")
    expected = to_int4pack(*unpack_gguf_q4_1(torch.from_numpy(blocks.copy())), torch.bfloat16)
    assert all(torch.equal(got, want) for got, want in zip(down.int4pack, expected))
