"""The fp8 KV cache: quantization error bounds, page sizing, and a greedy engine run on a
tiny random model served with cache.dtype=fp8_e4m3."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
import transformers

from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.kv.cache_pool import KVCachePool, dequantize_kv, quantize_kv
from toolkit.protocol import SamplingParams
from toolkit.runtime import build_runtime

FP8 = torch.float8_e4m3fn
VOCAB_SIZE = 64


def test_round_trip_error_is_within_half_an_fp8_step():
    """|x - deq(q(x))| <= |x| / 16 (3 mantissa bits) for normal fp8 values, and at most
    half the smallest subnormal step (2^-10 * scale) for tiny ones."""
    torch.manual_seed(0)
    x = torch.randn(500, 3, 64) * torch.rand(500, 3, 1) * 20  # vectors of varied magnitude
    x[7, 1] = 0.0
    values, scales = quantize_kv(x)
    assert values.dtype == FP8 and scales.shape == (500, 3) and scales.dtype == torch.float32
    restored = dequantize_kv(values, scales, torch.float32)
    bound = torch.maximum(x.abs() / 16, scales.unsqueeze(-1) * 2**-10)
    assert bool(((restored - x).abs() <= bound * (1 + 1e-6)).all())
    assert torch.allclose(scales, x.abs().amax(-1) / 448, rtol=1e-6, atol=0)
    assert torch.equal(restored[7, 1], torch.zeros(64))
    assert bool(restored.isfinite().all())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_dequantization_rounds_the_scale_then_multiplies_exactly(dtype):
    torch.manual_seed(2)
    # (amax >= 1 keeps fp16 scales out of fp16's subnormal range, where rounding scale
    # and scale * 2^8 differ)
    values, scales = quantize_kv(torch.randn(64, 3, 32) * (torch.rand(64, 3, 1) * 50 + 1))
    expected = (values.float() * scales.to(dtype).float().unsqueeze(-1)).to(dtype)
    assert torch.equal(dequantize_kv(values, scales, dtype), expected)


def test_pool_write_read_round_trip_at_scattered_slots():
    torch.manual_seed(1)
    slots = torch.tensor([0, 9, 10, 31, 17])
    k, v = torch.randn(5, 2, 16) * 3, torch.randn(5, 2, 16)
    fp8 = KVCachePool(2, num_pages=8, page_size=4, num_kv_heads=2, head_dim=16, dtype=FP8)
    dense = KVCachePool(2, num_pages=8, page_size=4, num_kv_heads=2, head_dim=16,
                        dtype=torch.float32)
    assert fp8.quantized and not dense.quantized and dense.scales is None
    for pool in (fp8, dense):
        pool.write(1, slots, k, v)
    assert torch.equal(torch.stack(dense.read(1, slots, torch.float32)), torch.stack((k, v)))
    read_k, read_v = fp8.read(1, slots, torch.float32)
    for original, restored in ((k, read_k), (v, read_v)):
        assert torch.equal(restored, dequantize_kv(*quantize_kv(original), torch.float32))
        assert bool(((restored - original).abs() <= original.abs().amax(-1, True) / 16).all())
    assert fp8.caches[0].abs().float().sum() == 0  # other layers untouched


def test_bytes_per_page_counts_fp8_values_and_their_scales():
    args = {"num_layers": 30, "page_size": 16, "num_kv_heads": 3, "head_dim": 64}
    bf16 = KVCachePool.bytes_per_page(**args, dtype=torch.bfloat16)
    fp8 = KVCachePool.bytes_per_page(**args, dtype=FP8)
    assert bf16 == 30 * 2 * 16 * 3 * 64 * 2
    assert fp8 == 30 * 2 * 16 * 3 * (64 + 4)
    pool = KVCachePool(30, 2, 16, 3, 64, FP8)
    held = sum(t.numel() * t.element_size() for t in pool.caches + pool.scales)
    assert held == 2 * fp8


def test_unknown_cache_dtype_lists_the_choices():
    with pytest.raises(ConfigError, match="cache.dtype='int8'.*auto, fp8_e4m3"):
        compose_config(["cache.dtype=int8"])


def _write_word_tokenizer(directory: pathlib.Path, vocab_size: int) -> None:
    """A whitespace word-level tokenizer over ``w0 .. w{n}`` (no download, loads fast)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(vocab_size - 3)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>"}))


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> pathlib.Path:
    """A tiny random Llama with a word-level tokenizer; its untied head is scaled up so
    that greedy choices have clear margins."""
    directory = tmp_path_factory.mktemp("tiny_fp8_kv")
    _write_word_tokenizer(directory, VOCAB_SIZE)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(50)
    model.save_pretrained(directory)
    return directory


def _greedy_tokens(model_dir: pathlib.Path, cache: list[str]) -> tuple[list[int], object]:
    overrides = ["device=cpu", f"model.path={model_dir}", "model.dtype=float32",
                 "model.max_model_len=64", "cache.page_size=4", *cache]
    runtime = build_runtime(compose_config(overrides))
    core = runtime.core
    prompt = runtime.tokenizer.encode(" ".join(f"w{i}" for i in range(3, 40, 2)))
    core.add_request("r", prompt, SamplingParams(max_tokens=24, temperature=0.0,
                                                 ignore_eos=True))
    tokens = []
    while core.has_unfinished:
        for output in core.step():
            tokens += output.new_token_ids
    core.guided.close()  # its compile workers are processes
    return tokens, runtime


def test_greedy_engine_run_on_an_fp8_cache(tiny_model_dir):
    """Same greedy tokens as a float32 cache; pages sized by the fp8 bytes (+ scales)."""
    reference, dense = _greedy_tokens(tiny_model_dir, ["cache.num_pages=32"])
    tokens, fp8 = _greedy_tokens(tiny_model_dir, ["cache.cpu_kv_cache_gb=0.001",
                                                  "cache.dtype=fp8_e4m3"])
    pool = fp8.core.runner.attention.kv_pool
    assert fp8.resolved.cache_dtype == "float8_e4m3fn"
    assert dense.resolved.cache_dtype == "float32"
    assert pool.caches[0].dtype == FP8 and pool.quantized
    page = KVCachePool.bytes_per_page(2, 4, 2, 16, FP8)
    assert fp8.resolved.num_pages == int(0.001 * (1 << 30)) // page
    assert len(tokens) == 24 and len(set(tokens)) > 1
    assert tokens == reference
