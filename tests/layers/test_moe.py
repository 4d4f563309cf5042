"""The MoE block: routing, the grouped CPU route and the Triton route (interpreter) against
an every-expert oracle and transformers' own blocks, and the expert storages of the quant
methods (dense, Q4_1, the refusal of the others)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers

from toolkit.kernels.dispatch import forced_triton
from toolkit.layers.linear import MAX_INVARIANT_ROWS
from toolkit.layers.moe import (
    SparseMoeBlock,
    grouped_experts,
    run_experts,
    select_experts,
)
from toolkit.quant.base import ModelLoadError
from toolkit.quant.experts import (
    DenseExperts,
    Q4_1Experts,
    create_expert_weights,
    expert_storage,
)
from toolkit.quant.fp8 import FP8Method
from toolkit.quant.linear import QuantLinear, ShardLoadError
from toolkit.quant.none import NoQuant
from toolkit.quant.q4_1 import Q4_1Method, dequantize_q4_1, quantize_q4_1

HIDDEN, INTERMEDIATE, NUM_EXPERTS = 64, 32, 4


def _weights(seed: int = 0, dtype: torch.dtype = torch.float32):
    generator = torch.Generator().manual_seed(seed)
    w13 = torch.randn(NUM_EXPERTS, 2 * INTERMEDIATE, HIDDEN, generator=generator) * 0.2
    w2 = torch.randn(NUM_EXPERTS, HIDDEN, INTERMEDIATE, generator=generator) * 0.2
    router = torch.randn(NUM_EXPERTS, HIDDEN, generator=generator) * 0.3
    return w13.to(dtype), w2.to(dtype), router.to(dtype)


def _load(experts: DenseExperts, w13: torch.Tensor, w2: torch.Tensor) -> DenseExperts:
    """Load stacked weights through the per-expert checkpoint path, then convert."""
    for e in range(NUM_EXPERTS):
        gate, up = w13[e].chunk(2)
        experts.load_expert("gate", e, gate)
        experts.load_expert("up", e, up)
        experts.load_expert("down", e, w2[e])
    experts.finish_loading()
    return experts


def _dense_experts(w13, w2, method=None) -> DenseExperts:
    method = method or NoQuant()
    return _load(create_expert_weights(method, NUM_EXPERTS, HIDDEN, INTERMEDIATE, w13.dtype,
                                       "cpu"), w13, w2)


def _router(weight: torch.Tensor, method=None) -> QuantLinear:
    method = method or NoQuant()
    router = QuantLinear(HIDDEN, (NUM_EXPERTS,), False, method, weight.dtype)
    router.load_shard("weight", weight)
    router.finish_loading()
    return router


def every_expert_oracle(x, w13, w2, router_weight, top_k, renormalize) -> torch.Tensor:
    """Every expert on every token, masked by the routing: O(T * E), float32."""
    weights, ids = select_experts(F.linear(x, router_weight), top_k, renormalize)
    routing = torch.zeros(x.shape[0], w13.shape[0]).scatter_(1, ids, weights)  # [T, E]
    gate, up = torch.einsum("th,enh->ten", x.float(), w13.float()).chunk(2, dim=-1)
    down = torch.einsum("tei,ehi->teh", F.silu(gate) * up, w2.float())  # [T, E, H]
    return (down * routing[..., None]).sum(1)


def test_select_experts_renormalized_is_softmax_over_the_top_logits():
    logits = torch.randn(6, NUM_EXPERTS)
    weights, ids = select_experts(logits, 2, renormalize=True)
    top_logits = logits.gather(1, ids)
    torch.testing.assert_close(weights, top_logits.softmax(-1))
    plain, plain_ids = select_experts(logits, 2, renormalize=False)
    assert torch.equal(ids, plain_ids)
    torch.testing.assert_close(plain, logits.softmax(-1).gather(1, ids))
    assert (weights[:, 0] >= weights[:, 1]).all()


@pytest.mark.parametrize("renormalize", [True, False])
def test_grouped_route_matches_the_every_expert_oracle(renormalize: bool):
    w13, w2, router_weight = _weights()
    x = torch.randn(11, HIDDEN, generator=torch.Generator().manual_seed(5))
    block = SparseMoeBlock(_router(router_weight), _dense_experts(w13, w2), 2, renormalize)
    expected = every_expert_oracle(x, w13, w2, router_weight, 2, renormalize)
    torch.testing.assert_close(block(x), expected, atol=1e-5, rtol=1e-5)


def test_triton_route_of_the_layer_matches_the_grouped_route():
    """forced_triton makes run_experts take the fused kernels (interpreter on CPU)."""
    w13, w2, router_weight = _weights(1)
    experts = _dense_experts(w13, w2)
    x = torch.randn(7, HIDDEN, generator=torch.Generator().manual_seed(6))
    weights, ids = select_experts(F.linear(x, router_weight), 2, True)
    grouped = grouped_experts(x, weights, ids, experts)
    with forced_triton():
        fused = run_experts(x, weights, ids, experts)
    torch.testing.assert_close(fused, grouped, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("block_cls", "config_cls", "fields"), [
    ("MixtralSparseMoeBlock", transformers.MixtralConfig,
     dict(num_local_experts=NUM_EXPERTS, intermediate_size=INTERMEDIATE)),
    ("Qwen3MoeSparseMoeBlock", transformers.Qwen3MoeConfig,
     dict(num_experts=NUM_EXPERTS, moe_intermediate_size=INTERMEDIATE, norm_topk_prob=True)),
], ids=["mixtral", "qwen3_moe"])
def test_block_matches_transformers_block(block_cls: str, config_cls, fields: dict):
    config = config_cls(hidden_size=HIDDEN, num_experts_per_tok=2, **fields)
    module = getattr(transformers.models, config.model_type)
    torch.manual_seed(0)
    reference = getattr(module, f"modeling_{config.model_type}").__dict__[block_cls](config)
    w13, w2, router_weight = _weights(2)
    with torch.no_grad():
        reference.gate.weight.copy_(router_weight)
        reference.experts.gate_up_proj.copy_(w13)
        reference.experts.down_proj.copy_(w2)
    x = torch.randn(1, 9, HIDDEN, generator=torch.Generator().manual_seed(7))
    block = SparseMoeBlock(_router(router_weight), _dense_experts(w13, w2), 2, True)
    with torch.no_grad():
        torch.testing.assert_close(block(x[0]), reference(x)[0], atol=1e-5, rtol=1e-5)


def test_a_tokens_result_does_not_depend_on_the_batch():
    """Batch-invariant dense matmuls (device.deterministic): the same bits for a token
    alone and among others routed to the same and other experts (the grouping and the
    scatter-add never mix rows)."""
    method = NoQuant()
    if not method.enable_batch_invariance():
        pytest.skip("no oneDNN")
    method.invariant_min_rows = MAX_INVARIANT_ROWS  # one call shape: invariant on any CPU
    w13, w2, router_weight = _weights(3)
    block = SparseMoeBlock(_router(router_weight, method), _dense_experts(w13, w2, method),
                           2, True)
    x = torch.randn(24, HIDDEN, generator=torch.Generator().manual_seed(8))
    whole = block(x)
    for rows in (slice(0, 1), slice(5, 8), slice(3, 20)):
        assert torch.equal(block(x[rows]), whole[rows])


def test_q4_1_experts_in_float32_run_the_dequantized_weights():
    w13, w2, router_weight = _weights(4)
    experts = _dense_experts(w13, w2, Q4_1Method(32, 64, prepack_weights=False))
    assert isinstance(experts, Q4_1Experts) and experts.stacked() is not None

    def q4_1(weight: torch.Tensor) -> torch.Tensor:
        return dequantize_q4_1(*quantize_q4_1(weight, 32), torch.float32)

    deq13 = torch.stack([q4_1(w) for w in w13])
    deq2 = torch.stack([q4_1(w) for w in w2])
    assert not torch.equal(deq13, w13)
    x = torch.randn(6, HIDDEN, generator=torch.Generator().manual_seed(9))
    block = SparseMoeBlock(_router(router_weight), experts, 2, True)
    torch.testing.assert_close(block(x), every_expert_oracle(x, deq13, deq2, router_weight,
                                                             2, True), atol=1e-5, rtol=1e-5)


def test_q4_1_experts_in_bfloat16_keep_only_the_int4_codes():
    method = Q4_1Method(32, 64, prepack_weights=False)
    w13, w2, router_weight = _weights(5, torch.bfloat16)
    experts = _dense_experts(w13, w2, method)
    if experts.int4_13 is None:
        pytest.skip("this torch has no int4 CPU kernel")
    assert experts.stacked() is None and experts.w13 is None
    assert experts.resident_bytes() < 0.35 * (w13.numel() + w2.numel()) * 2
    dense = _dense_experts(*(torch.stack([dequantize_q4_1(*quantize_q4_1(w, 32),
                                                          torch.bfloat16) for w in stacked])
                             for stacked in (w13, w2)))
    x = torch.randn(80, HIDDEN, generator=torch.Generator().manual_seed(10)).bfloat16()
    for rows in (x[:3], x):  # the int4 kernel, and dequantize + matmul past 64 rows
        torch.testing.assert_close(experts.gate_up(1, rows).float(),
                                   dense.gate_up(1, rows).float(), atol=5e-2, rtol=2e-2)
        hidden = rows[:, :INTERMEDIATE]
        torch.testing.assert_close(experts.down(2, hidden).float(),
                                   dense.down(2, hidden).float(), atol=5e-2, rtol=2e-2)


def test_methods_without_an_expert_storage_are_refused_naming_those_with_one():
    with pytest.raises(ModelLoadError) as error:
        expert_storage(FP8Method())
    assert str(error.value) == ("quant=fp8 cannot hold mixture-of-experts weights; methods "
                                "that can: none, q4_1")


def test_q4_1_refuses_experts_its_group_does_not_divide():
    with pytest.raises(ModelLoadError, match="group_size=32 does not divide .* 48"):
        create_expert_weights(Q4_1Method(32, 64, False), NUM_EXPERTS, HIDDEN, 48,
                              torch.float32, "cpu")


def test_load_expert_rejects_a_wrong_shape_part_or_expert():
    experts = create_expert_weights(NoQuant(), NUM_EXPERTS, HIDDEN, INTERMEDIATE,
                                    torch.float32, "cpu")
    with pytest.raises(ShardLoadError, match=r"shape \(32, 32\), expected \(32, 64\)"):
        experts.load_expert("gate", 0, torch.zeros(32, 32))
    with pytest.raises(ShardLoadError, match="no expert part 'w9'"):
        experts.load_expert("w9", 0, torch.zeros(32, 64))
    with pytest.raises(ShardLoadError, match="expert 4 of 4"):
        experts.load_expert("down", 4, torch.zeros(64, 32))
