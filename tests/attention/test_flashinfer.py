"""attention=flashinfer: start-up resolution (CPU), the backend's planning against fake
wrappers that implement FlashInfer's documented semantics (CPU), and parity with the
torch_ref oracle on real FlashInfer kernels (@gpu)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types

import pytest
import torch
from paged_batch import build_forward_batch

from toolkit.attention.flashinfer import FlashInferBackend
from toolkit.attention.forward_batch import ForwardBatch
from toolkit.attention.registry import ATTENTION_BACKENDS
from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.kv.cache_pool import KVCachePool
from toolkit.resolve import resolve_attention

MIXED_STEP = [(10, 3, [2, 9, 4]), (7, 1, [13, 6]), (5, 5, [20, 17]), (12, 1, [1, 0, 5])]
DECODE_STEP = [(9, 1, [7, 3, 12]), (4, 1, [5]), (13, 1, [30, 0, 2, 21]), (1, 1, [9])]
PREFILL_STEP = [(11, 11, [6, 2, 15]), (14, 5, [3, 19, 8, 1])]


# --- resolution (CPU) ---------------------------------------------------------------------

def test_flashinfer_without_cuda_fails_at_resolve_time_in_one_line():
    cfg = compose_config(["attention=flashinfer"])
    with pytest.raises(ConfigError) as error:
        resolve_attention(cfg, "cpu")
    message = str(error.value)
    assert message.startswith("attention.backend=flashinfer needs a CUDA device")
    assert "attention=torch_ref" in message and "\n" not in message


def test_flashinfer_that_does_not_import_fails_at_resolve_time(monkeypatch):
    monkeypatch.setitem(sys.modules, "flashinfer", None)  # makes `import flashinfer` fail
    with pytest.raises(ConfigError, match="flashinfer cannot import flashinfer"):
        resolve_attention(compose_config(["attention=flashinfer"]), "cuda")
    assert resolve_attention(compose_config(["attention=auto"]), "cuda") == "torch_ref"


def test_auto_picks_flashinfer_on_cuda_when_it_imports(monkeypatch):
    monkeypatch.setitem(sys.modules, "flashinfer", types.ModuleType("flashinfer"))
    assert resolve_attention(compose_config(["attention=auto"]), "cuda") == "flashinfer"
    assert resolve_attention(compose_config(["attention=auto"]), "cpu") == "torch_ref"
    assert resolve_attention(compose_config(["attention=torch_ref"]), "cuda") == "torch_ref"


def test_fp8_kv_cache_keeps_auto_on_torch_ref_and_refuses_flashinfer(monkeypatch):
    monkeypatch.setitem(sys.modules, "flashinfer", types.ModuleType("flashinfer"))
    fp8 = ["cache.dtype=fp8_e4m3"]
    assert resolve_attention(compose_config(["attention=auto", *fp8]), "cuda") == "torch_ref"
    with pytest.raises(ConfigError, match="needs a float16/bfloat16 KV cache"):
        resolve_attention(compose_config(["attention=flashinfer", *fp8]), "cuda")


def test_importing_the_backend_module_does_not_import_flashinfer():
    code = ("import sys, toolkit.attention.registry, toolkit.attention.flashinfer; "
            "print('flashinfer' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


# --- planning against FlashInfer's documented semantics (CPU) -------------------------------

def _paged_attention(q, cache, qo_indptr, kv_indptr, kv_indices, last_page_len, sm_scale):
    """FlashInfer's documented paged attention in torch: request i's queries
    q[qo_indptr[i]:qo_indptr[i+1]] attend causally (bottom-right aligned) to its
    (num_pages - 1) * P + last_page_len K/V positions in pages kv_indices[kv_indptr[i]:...]."""
    page_size, num_kv_heads = cache.shape[2], cache.shape[3]
    out = torch.empty_like(q)
    for i in range(len(last_page_len)):
        pages = kv_indices[kv_indptr[i]:kv_indptr[i + 1]].long().cpu()
        kv_len = (len(pages) - 1) * page_size + int(last_page_len[i])
        keys = cache[pages, 0].reshape(-1, num_kv_heads, cache.shape[4])[:kv_len].float()
        values = cache[pages, 1].reshape(-1, num_kv_heads, cache.shape[4])[:kv_len].float()
        rows = slice(int(qo_indptr[i]), int(qo_indptr[i + 1]))
        query = q[rows].float()  # [qo_len, Hq, D]
        group = q.shape[1] // num_kv_heads
        keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
        scores = torch.einsum("qhd,khd->hqk", query, keys) * sm_scale
        query_pos = torch.arange(kv_len - query.shape[0], kv_len)
        scores = scores.masked_fill(torch.arange(kv_len)[None, :] > query_pos[:, None], -1e30)
        out[rows] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values).to(q.dtype)
    return out


class _FakeDecodeWrapper:
    """BatchDecodeWithPagedKVCacheWrapper's plan/run signatures, computed in torch."""

    def __init__(self) -> None:
        self.num_plans = 0

    def plan(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim,
             page_size, *, sm_scale=None, q_data_type="float16", kv_data_type=None):
        assert indptr.dtype == indices.dtype == last_page_len.dtype == torch.int32
        self.num_plans += 1
        self.args = (indptr, indices, last_page_len, sm_scale or head_dim**-0.5, q_data_type)

    def run(self, q, paged_kv_cache):
        indptr, indices, last_page_len, sm_scale, q_dtype = self.args
        assert q.dtype == q_dtype and q.shape[0] == len(last_page_len)
        qo_indptr = torch.arange(len(last_page_len) + 1, dtype=torch.int32)
        return _paged_attention(q, paged_kv_cache, qo_indptr, indptr, indices, last_page_len,
                                sm_scale)


class _FakePrefillWrapper:
    """BatchPrefillWithPagedKVCacheWrapper's plan/run signatures, computed in torch."""

    def __init__(self) -> None:
        self.num_plans = 0

    def plan(self, qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len,
             num_qo_heads, num_kv_heads, head_dim_qk, page_size, head_dim_vo=None,
             custom_mask=None, packed_custom_mask=None, causal=False, pos_encoding_mode="NONE",
             use_fp16_qk_reduction=False, sm_scale=None, window_left=-1, logits_soft_cap=None,
             rope_scale=None, rope_theta=None, q_data_type="float16", kv_data_type=None):
        assert causal, "the default is causal=False: it must be asked for"
        self.num_plans += 1
        self.args = (qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len,
                     sm_scale or head_dim_qk**-0.5, q_data_type)

    def run(self, q, paged_kv_cache):
        *table, sm_scale, q_dtype = self.args
        assert q.dtype == q_dtype and q.shape[0] == int(table[0][-1])
        return _paged_attention(q, paged_kv_cache, *table, sm_scale)


class _FakeWrapperBackend(FlashInferBackend):
    """The real backend with fake wrappers, so that its planning runs on CPU."""

    def _create_wrappers(self):
        return _FakeDecodeWrapper(), _FakePrefillWrapper()


def _step(requests: list[tuple[int, int, list[int]]], page_size: int,
          device: str = "cpu") -> ForwardBatch:
    """requests: (seq_len after the step, new tokens, page ids) -> the step's batch, with
    kv_indices and slot_mapping on ``device`` (CSR offsets stay on the CPU)."""
    batch = build_forward_batch([([0] * qo_len, seq_len - qo_len, pages)
                                 for seq_len, qo_len, pages in requests], page_size)
    return dataclasses.replace(batch, kv_indices=batch.kv_indices.to(device),
                               slot_mapping=batch.slot_mapping.to(device))


def _run_both(backends, requests, page_size, num_qo_heads, num_kv_heads, head_dim, dtype,
              device, num_layers=2):
    """Write each request's cached prefix, then run one step on every layer; returns each
    backend's outputs [layer][T, Hq, D]."""
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(dtype=dtype, device=device)

    prefix = [(s - n, s - n, pages) for s, n, pages in requests if s > n]
    num_prefix = sum(s for s, _, _ in prefix)
    num_new = sum(n for _, n, _ in requests)
    prefix_kv = [(randn(num_prefix, num_kv_heads, head_dim), randn(num_prefix, num_kv_heads,
                                                                    head_dim))
                 for _ in range(num_layers)]
    step = [(randn(num_new, num_qo_heads, head_dim), randn(num_new, num_kv_heads, head_dim),
             randn(num_new, num_kv_heads, head_dim)) for _ in range(num_layers)]
    outputs = []
    for backend in backends:
        if prefix:
            backend.plan(_step(prefix, page_size, device))
            for layer, (k, v) in enumerate(prefix_kv):
                backend.forward(layer, randn(num_prefix, num_qo_heads, head_dim), k, v)
        backend.plan(_step(requests, page_size, device))
        outputs.append([backend.forward(layer, *step[layer]) for layer in range(num_layers)])
    return outputs


def _pools(num_layers, page_size, num_kv_heads, head_dim, dtype, device):
    return [KVCachePool(num_layers, 32, page_size, num_kv_heads, head_dim, dtype, device)
            for _ in range(2)]


@pytest.mark.parametrize("requests", [DECODE_STEP, MIXED_STEP, PREFILL_STEP],
                         ids=["decode", "mixed", "prefill"])
def test_planned_page_table_means_what_torch_ref_computes(requests):
    page_size, num_qo_heads, num_kv_heads, head_dim = 4, 8, 2, 64
    ref_pool, fake_pool = _pools(2, page_size, num_kv_heads, head_dim, torch.bfloat16, "cpu")
    ref = ATTENTION_BACKENDS.get("torch_ref")(ref_pool, num_qo_heads, num_kv_heads, head_dim)
    fake = _FakeWrapperBackend(fake_pool, num_qo_heads, num_kv_heads, head_dim)
    want, got = _run_both([ref, fake], requests, page_size, num_qo_heads, num_kv_heads,
                          head_dim, torch.bfloat16, "cpu")
    for ref_out, out in zip(want, got, strict=True):
        torch.testing.assert_close(out, ref_out, atol=2e-2, rtol=2e-2)
    for ref_cache, cache in zip(ref_pool.caches, fake_pool.caches, strict=True):
        assert torch.equal(ref_cache, cache)
    is_decode = all(n == 1 for _, n, _ in requests)
    num_prefix_steps = int(any(s > n for s, n, _ in requests))
    assert fake._wrapper is (fake._decode if is_decode else fake._prefill)
    assert fake._decode.num_plans + fake._prefill.num_plans == 1 + num_prefix_steps  # per step


def test_unsupported_pools_are_refused_with_one_line():
    fp8 = KVCachePool(1, 4, 4, 2, 64, torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="float16/bfloat16 KV caches"):
        _FakeWrapperBackend(fp8, 4, 2, 64)
    with pytest.raises(ValueError, match="head_dim"):
        _FakeWrapperBackend(KVCachePool(1, 4, 4, 2, 48, torch.bfloat16), 4, 2, 48)
    with pytest.raises(ValueError, match="needs a CUDA KV cache"):
        FlashInferBackend(KVCachePool(1, 4, 4, 2, 64, torch.bfloat16), 4, 2, 64)


# --- parity with torch_ref on real kernels (GPU) --------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("requests", [DECODE_STEP, MIXED_STEP, PREFILL_STEP],
                         ids=["decode", "mixed", "prefill"])
@pytest.mark.parametrize(("num_qo_heads", "num_kv_heads", "head_dim"),
                         [(6, 2, 64), (8, 2, 128)], ids=["group3", "group4-tensor-cores"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_flashinfer_matches_torch_ref(requests, num_qo_heads, num_kv_heads, head_dim, dtype):
    pytest.importorskip("flashinfer")
    page_size = 4
    ref_pool, fi_pool = _pools(2, page_size, num_kv_heads, head_dim, dtype, "cuda")
    ref = ATTENTION_BACKENDS.get("torch_ref")(ref_pool, num_qo_heads, num_kv_heads, head_dim)
    fi = ATTENTION_BACKENDS.get("flashinfer")(fi_pool, num_qo_heads, num_kv_heads, head_dim)
    want, got = _run_both([ref, fi], requests, page_size, num_qo_heads, num_kv_heads,
                          head_dim, dtype, "cuda")
    for ref_out, out in zip(want, got, strict=True):
        assert out.shape == ref_out.shape and out.dtype == dtype
        torch.testing.assert_close(out, ref_out, atol=2e-2, rtol=2e-2)
    for ref_cache, cache in zip(ref_pool.caches, fi_pool.caches, strict=True):
        assert torch.equal(ref_cache, cache)


@pytest.mark.gpu
@pytest.mark.parametrize("page_size", [1, 16])
def test_flashinfer_matches_torch_ref_across_page_sizes(page_size):
    pytest.importorskip("flashinfer")
    requests = [(21, 1, list(range(21))), (9, 9, list(range(21, 30)))]
    if page_size == 16:
        requests = [(21, 1, [3, 0]), (9, 9, [1])]
    ref_pool, fi_pool = _pools(1, page_size, 2, 64, torch.bfloat16, "cuda")
    ref = ATTENTION_BACKENDS.get("torch_ref")(ref_pool, 8, 2, 64)
    fi = ATTENTION_BACKENDS.get("flashinfer")(fi_pool, 8, 2, 64)
    want, got = _run_both([ref, fi], requests, page_size, 8, 2, 64, torch.bfloat16, "cuda",
                          num_layers=1)
    torch.testing.assert_close(got[0], want[0], atol=2e-2, rtol=2e-2)
