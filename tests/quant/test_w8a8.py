"""quant=w8a8: int8 per-channel weights made at load time, int8 per-token activations,
int32 matmuls (toolkit/quant/w8a8.py)."""

from __future__ import annotations

import pathlib

import pytest
import torch
from dense_layer import load_dense_layer
from paged_batch import prefill_logits
from tiny_checkpoint import write_tiny_llama

from toolkit.config.schema import QuantConfig
from toolkit.kernels.int8_rows import MAX_CODE, quantize_rows_ref
from toolkit.kernels.q8_linear import unpack_q8
from toolkit.kernels.route import TORCH
from toolkit.models.loader import ModelLoadError, load_model
from toolkit.protocol import SamplingParams
from toolkit.quant import w8a8
from toolkit.quant.linear import QuantLinear
from toolkit.quant.registry import create_quant_method
from toolkit.quant.w8a8 import W8A8Method, create_w8a8

DTYPES = [torch.float32, torch.bfloat16]


def _w8a8_layer(weight: torch.Tensor, output_sizes: tuple[int, ...],
                bias: torch.Tensor | None = None, kernels=TORCH) -> QuantLinear:
    """A QuantLinear under W8A8Method, loaded part by part from the dense ``weight``."""
    method = W8A8Method()
    method.kernels = kernels
    return load_dense_layer(method, weight, output_sizes, bias)


def test_weight_codes_are_per_channel_symmetric_int8():
    weight = torch.randn(48, 40) * torch.logspace(-3, 1, 48)[:, None]
    weight[7] = 0.0
    codes, scales = quantize_rows_ref(weight)  # what after_load makes of a weight
    assert codes.dtype == torch.int8 and scales.dtype == torch.float32
    assert torch.equal(scales[7], torch.tensor(1.0)) and not codes[7].any()
    rows = torch.arange(48) != 7
    torch.testing.assert_close(scales[rows], weight[rows].abs().amax(1) / MAX_CODE)
    assert int(codes.abs().max()) == MAX_CODE
    error = (codes.float() * scales[:, None] - weight).abs()
    assert bool((error <= scales[:, None] / 2 * 1.0001).all())


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_is_within_the_int8_rounding_bound_of_the_float_matmul(dtype):
    """|x.w - s_x s_w q_x.q_w| <= sum_k (|x_k| s_w + |w_k| s_x) / 2 + 3/4 s_x s_w (each
    code within half a step of its value), plus float32 arithmetic and, in bfloat16, the
    output's rounding (half an ulp: 2**-9 relative)."""
    generator = torch.Generator().manual_seed(1)
    weight = (torch.randn(160, 96, generator=generator) * 0.05).to(dtype)  # fused 96+32+32
    bias = torch.randn(160, generator=generator).to(dtype)
    x = (torch.randn(9, 96, generator=generator) * torch.logspace(-2, 1, 9)[:, None]).to(dtype)
    layer = _w8a8_layer(weight, (96, 32, 32), bias)
    out = layer(x)
    assert out.dtype == dtype and out.shape == (9, 160)
    assert layer.weight.dtype == torch.int8 and layer.weight.shape == (160, 96)
    xd, wd = x.double(), weight.double()
    exact = xd @ wd.T + bias.double()
    s_x = xd.abs().amax(1, keepdim=True) / MAX_CODE  # [T, 1]
    s_w = wd.abs().amax(1)[None, :] / MAX_CODE  # [1, N]
    magnitude = xd.abs() @ wd.abs().T  # [T, N]
    bound = (xd.abs().sum(1, keepdim=True) * s_w + s_x * wd.abs().sum(1)[None, :]) / 2 \
        + 0.75 * 96 * s_x * s_w + 1e-5 * magnitude + 1e-6 * bias.double().abs()
    if dtype == torch.bfloat16:
        bound = bound + exact.abs() * 2**-8
    error = (out.double() - exact).abs()
    assert bool((error <= bound).all()), float((error / bound).max())
    assert float((error / bound).max()) > 0.01  # the bound is not vacuous


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("route", ["torch", "native"])
def test_each_row_has_the_same_bits_alone_and_among_3_16_and_300_rows(
        native_kernels, dtype, route):
    kernels = native_kernels if route == "native" else TORCH
    generator = torch.Generator().manual_seed(2)
    weight = (torch.randn(120, 72, generator=generator) * 0.05).to(dtype)
    bias = torch.randn(120, generator=generator).to(dtype)
    layer = _w8a8_layer(weight, (120,), bias, kernels)
    x = torch.randn(300, 72, generator=generator).to(dtype)
    among_300 = layer(x)
    for row in (0, 1, 2, 15, 299):
        assert torch.equal(layer(x[row:row + 1]), among_300[row:row + 1])
    assert torch.equal(layer(x[:3]), among_300[:3])
    assert torch.equal(layer(x[100:116]), among_300[100:116])
    assert layer.method.batch_variance(layer) is None


@pytest.mark.parametrize("dtype", DTYPES)
def test_native_and_torch_routes_give_the_same_bits(native_kernels, dtype):
    generator = torch.Generator().manual_seed(3)
    weight = (torch.randn(64, 33, generator=generator) * 0.1).to(dtype)
    bias = torch.randn(64, generator=generator).to(dtype)
    x = torch.randn(5, 33, generator=generator).to(dtype)
    native_layer = _w8a8_layer(weight, (64,), bias, native_kernels)
    torch_layer = _w8a8_layer(weight, (64,), bias, TORCH)
    assert torch.equal(native_layer(x), torch_layer(x))
    for layer in (native_layer, torch_layer):  # an empty step
        assert layer(x[:0]).shape == (0, 64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_native_route_keeps_the_codes_in_q8_layout_with_the_same_bits(native_kernels, dtype,
                                                                     monkeypatch):
    """N a multiple of 8 and K of 32 (on a CPU where q8_int_mm is preferred, as here by
    force): the native route's q8_int_mm gives the torch route's bits."""
    monkeypatch.setattr(w8a8, "q8_int_mm_preferred", lambda: True)
    generator = torch.Generator().manual_seed(4)
    weight = (torch.randn(48, 64, generator=generator) * 0.1).to(dtype)
    x = torch.randn(6, 64, generator=generator).to(dtype)
    native_layer = _w8a8_layer(weight, (16, 32), None, native_kernels)
    torch_layer = _w8a8_layer(weight, (16, 32), None, TORCH)
    assert native_layer.weight_t is None and native_layer.weight.dtype == torch.uint8
    assert torch.equal(unpack_q8(native_layer.weight), torch_layer.weight)
    assert torch.equal(native_layer(x), torch_layer(x))
    projection = native_layer.method.native_projection(native_layer)
    assert projection.kernel == "w8a8" and projection.weight is native_layer.weight
    assert native_layer.method.resident_bytes(native_layer) == 48 * 64 + 48 * 4
    monkeypatch.setattr(w8a8, "q8_int_mm_preferred", lambda: False)  # AMX: oneDNN's _int_mm
    amx_layer = _w8a8_layer(weight, (16, 32), None, native_kernels)
    assert amx_layer.weight_t is not None and torch.equal(amx_layer(x), torch_layer(x))


def test_resident_bytes_are_one_per_weight_and_the_dense_weight_is_gone():
    weight = torch.randn(512, 384).bfloat16()
    layer = _w8a8_layer(weight, (512,))
    assert layer.method.resident_bytes(layer) == 512 * 384 + 512 * 4
    assert {n: p.dtype for n, p in layer.named_parameters()} == {
        "weight": torch.int8, "weight_scale": torch.float32}


def test_w8a8_refuses_a_quantized_checkpoint_a_group_size_and_cuda_weights():
    with pytest.raises(ModelLoadError, match="already awq-quantized"):
        create_w8a8(QuantConfig(method="w8a8"), {"quant_method": "awq"}, True)
    with pytest.raises(ModelLoadError, match="quant.group_size=64 does not apply to w8a8"):
        create_w8a8(QuantConfig(method="w8a8", group_size=64), {}, True)
    assert isinstance(create_quant_method(QuantConfig(method="w8a8"), {}), W8A8Method)
    layer = QuantLinear(8, (8,), False, W8A8Method(), torch.float32, "meta")
    with pytest.raises(ModelLoadError, match="runs on the CPU only"):
        layer.finish_loading()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> pathlib.Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-w8a8"))


def _logits(model, tokens: list[int]) -> torch.Tensor:
    return prefill_logits(model, tokens, 4, 2, 16)


def test_loaded_model_stays_close_to_quant_none(tiny_dir):
    """Every matmul's int8 rounding is a relative error of about 1/(127 sqrt 3) ~ 0.5 % RMS
    per operand at unit-variance rows (two operands, eight matmuls in series, and the
    attention/MLP amplifying it): a few per cent of the logits' norm, under 5 %."""
    tokens = [3, 17, 5, 29, 11, 60, 38, 21, 7, 44, 9]
    w8a8 = load_model(tiny_dir, torch.float32, "cpu", quant=QuantConfig(method="w8a8"))
    dense = load_model(tiny_dir, torch.float32, "cpu", quant=QuantConfig(method="none"))
    assert w8a8.layers[0].qkv_proj.weight.dtype == torch.int8
    assert w8a8.lm_head.dtype == torch.float32  # the LM head stays dense
    ours, exact = _logits(w8a8, tokens), _logits(dense, tokens)
    relative = ((ours - exact).norm() / exact.norm()).item()
    assert 0 < relative < 0.05, relative


def test_int8_lm_head_is_an_option_on_the_native_route(tiny_dir, native_kernels):
    """quant.int8_lm_head: q8_linear for every step's logits (so still batch-invariant);
    nothing on the torch route, where the int8 head covers one-row steps only; refused for
    other methods."""
    tokens = [3, 17, 5, 29, 11, 60, 38, 21, 7, 44, 9]
    config = QuantConfig(method="w8a8", int8_lm_head=True)
    model = load_model(tiny_dir, torch.bfloat16, "cpu", quant=config, kernels=native_kernels)
    head = model.quantized_lm_head
    assert head is not None and head.kernels.is_native
    hidden = torch.randn(20, 64, generator=torch.Generator().manual_seed(2)).bfloat16()
    assert torch.equal(model.compute_logits(hidden), head.logits(hidden).float())
    assert torch.equal(model.compute_logits(hidden[:1]), model.compute_logits(hidden)[:1])
    dense_head = load_model(tiny_dir, torch.bfloat16, "cpu", quant=QuantConfig(method="w8a8"),
                            kernels=native_kernels)
    assert dense_head.quantized_lm_head is None
    ours, exact = _logits(model, tokens).float(), _logits(dense_head, tokens).float()
    assert ((ours - exact).norm() / exact.norm()).item() < 0.02
    torch_route = load_model(tiny_dir, torch.bfloat16, "cpu", quant=config)
    assert torch_route.quantized_lm_head is None
    with pytest.raises(ModelLoadError, match="int8_lm_head=true applies to quant=w8a8"):
        create_quant_method(QuantConfig(method="none", int8_lm_head=True), {})


def _run(core, requests) -> dict[str, list[int]]:
    tokens = {rid: [] for rid in requests}
    for rid, prompt in requests.items():
        core.add_request(rid, prompt, SamplingParams(max_tokens=10, temperature=0.0,
                                                     ignore_eos=True))
    while core.has_unfinished:
        for output in core.step():
            tokens[output.request_id] += output.new_token_ids
    return tokens


@pytest.mark.parametrize(("dtype", "int8_lm_head"),
                         [("float32", False), ("bfloat16", False), ("bfloat16", True)])
def test_engine_greedy_tokens_are_deterministic_across_runs_and_batches(tiny_dir, dtype,
                                                                       int8_lm_head):
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    runtime = build_runtime(compose_config([
        "device=cpu", f"model.path={tiny_dir}", f"model.dtype={dtype}", "quant=w8a8",
        f"quant.int8_lm_head={str(int8_lm_head).lower()}",
        "model.max_model_len=64", "cache.num_pages=128", "cache.page_size=4",
        "cache.enable_prefix_caching=false"]))
    assert runtime.resolved.deterministic  # build_runtime's batch_variance check passed
    assert runtime.quant_name == "w8a8"
    generator = torch.Generator().manual_seed(4)
    prompts = {f"r{i}": torch.randint(3, 64, (3 + 5 * i,), generator=generator).tolist()
               for i in range(6)}
    alone = {rid: _run(runtime.core, {rid: prompt})[rid] for rid, prompt in prompts.items()}
    assert _run(runtime.core, prompts) == alone
    assert _run(runtime.core, dict(list(prompts.items())[:3])) == \
        {rid: alone[rid] for rid in list(prompts)[:3]}
    assert _run(runtime.core, prompts) == alone  # a second run
    assert len({tuple(t) for t in alone.values()}) > 1
