"""LoraManager: slots (LRU over max_loras), loaded adapters (LRU over max_cpu_loras),
keys per load, unloading an adapter in use; the CPU route equals the kernels' twin."""

from __future__ import annotations

import pytest
import torch

from toolkit.kernels.lora_bgmv import lora_delta_ref
from toolkit.lora.errors import LoraLoadError, LoraNotFoundError
from toolkit.lora.manager import LoraManager


@pytest.fixture
def model(tiny_base):
    from toolkit.models.loader import load_model

    return load_model(tiny_base, torch.float32, "cpu")


def _manager(model, adapters, names, max_loras=2, max_cpu_loras=2) -> LoraManager:
    manager = LoraManager(model, max_loras, 16, max_cpu_loras, torch.float32, "cpu")
    for name in names:
        manager.add(name, str(adapters[name]))
    return manager


def test_slots_are_reused_least_recently_used_first(model, adapters):
    manager = _manager(model, adapters, ["all7", "qv", "mlp_rslora"])
    first = manager.activate([("r0", "all7"), ("r1", "qv"), ("r2", None)])
    assert first == {None: -1, "all7": 0, "qv": 1}
    assert manager.activate([("r3", "qv")])["qv"] == 1  # already in a slot: not rewritten
    assert manager.activate([("r4", "mlp_rslora")])["mlp_rslora"] == 0  # all7's slot
    with pytest.raises(RuntimeError, match="3 adapters in one step"):
        manager.activate([("x", "all7"), ("y", "qv"), ("z", "mlp_rslora")])


def test_a_slot_holds_exactly_the_adapter(model, adapters):
    manager = _manager(model, adapters, ["qv", "all7"])
    manager.activate([("r0", "all7")])
    manager.activate([("r1", "qv")])
    slot = manager.activate([("r2", "qv")])["qv"]
    qkv = model.layers[0].qkv_proj.lora
    rank, q_out = 4, model.layers[0].qkv_sizes[0]
    a_q = qkv.a[slot, :rank]
    assert torch.count_nonzero(qkv.a[slot, rank:16]) == 0  # q's rows beyond its rank
    assert torch.count_nonzero(qkv.a[slot, 16:32]) == 0  # k is not targeted
    assert torch.count_nonzero(a_q) > 0 and torch.count_nonzero(qkv.b[slot, :q_out]) > 0
    assert torch.count_nonzero(model.layers[0].o_proj.lora.a[slot]) == 0


def test_loaded_adapters_are_read_again_after_eviction(model, adapters):
    manager = _manager(model, adapters, ["all7", "qv", "mlp_rslora"], max_cpu_loras=1)
    assert list(manager._loaded) == ["mlp_rslora"]
    slot = manager.activate([("r0", "all7")])["all7"]
    assert list(manager._loaded) == ["all7"]
    assert torch.count_nonzero(model.layers[1].down_proj.lora.b[slot]) > 0


def test_unload_waits_for_the_requests_using_it(model, adapters):
    manager = _manager(model, adapters, ["qv"])
    manager.activate([("r0", "qv")])
    manager.remove("qv")
    assert manager.resolve("qv") is None and manager.served() == []
    assert manager.activate([("r0", "qv")])["qv"] >= 0  # r0 runs on with it
    manager.activate([("late", "qv")])  # admitted before the unload, scheduled after
    manager.release("r0")
    assert "qv" in manager._slot_keys
    manager.release("late")
    assert "qv" not in manager._slot_keys and manager.num_pinned == 0
    with pytest.raises(LoraNotFoundError, match="'qv' is not loaded"):
        manager.activate([("new", "qv")])
    with pytest.raises(LoraNotFoundError):
        manager.remove("qv")


def test_each_load_of_a_name_has_its_own_key(model, adapters):
    manager = _manager(model, adapters, ["qv"])
    assert manager.resolve("qv") == "qv"
    with pytest.raises(LoraLoadError, match="already loaded"):
        manager.add("qv", str(adapters["qv"]))
    manager.remove("qv")
    assert manager.add("qv", str(adapters["all7"])).key == "qv#2"
    assert manager.resolve("qv") == "qv#2"
    manager.activate([("r", "qv#2")])
    assert manager.request_counts() == {"qv": 1}


def test_cpu_route_equals_the_twin(model, adapters):
    manager = _manager(model, adapters, ["all7", "patterned"], max_loras=2)
    slot_of = manager.activate([("r0", "all7"), ("r1", "patterned")])
    token_slots = [slot_of["all7"]] * 3 + [-1] * 2 + [slot_of["patterned"]] * 4 + [-1]
    manager.batch.set(token_slots, "cpu")
    for proj in (model.layers[1].qkv_proj, model.layers[0].gate_up_proj,
                 model.layers[1].o_proj):
        x = torch.randn(len(token_slots), proj.in_features)
        base = proj.method.apply(proj, x, proj.bias_tensor)
        expected = base + lora_delta_ref(x, proj.lora.a, proj.lora.b,
                                         torch.tensor(token_slots))
        torch.testing.assert_close(proj(x), expected, atol=1e-5, rtol=1e-5)
    manager.batch.clear()
    x = torch.randn(4, model.layers[0].qkv_proj.in_features)
    proj = model.layers[0].qkv_proj
    assert torch.equal(proj(x), proj.method.apply(proj, x, proj.bias_tensor))


@pytest.mark.parametrize("quant", ["q4_1", "fp8"])
def test_quantized_projections_stay_quantized_and_get_the_delta(tiny_base, adapters, quant):
    """quant=q4_1 / fp8 base with bfloat16 adapters: each projection's output is the
    quantized matmul's plus the twin's delta on adapter rows, the matmul alone elsewhere."""
    from toolkit.compose import compose_config
    from toolkit.models.loader import load_model

    model = load_model(tiny_base, torch.bfloat16, "cpu",
                       quant=compose_config([f"quant={quant}"]).quant)
    manager = LoraManager(model, 2, 16, 2, torch.bfloat16, "cpu")
    manager.add("all7", str(adapters["all7"]))
    slot = manager.activate([("r", "all7")])["all7"]
    token_slots = [slot, -1, slot, slot]
    manager.batch.set(token_slots, "cpu")
    for proj in (model.layers[0].qkv_proj, model.layers[1].gate_up_proj,
                 model.layers[1].down_proj):
        assert proj.method.name == quant
        x = torch.randn(4, proj.in_features).bfloat16()
        base = proj.method.apply(proj, x, proj.bias_tensor)
        delta = lora_delta_ref(x.float(), proj.lora.a.float(), proj.lora.b.float(),
                               torch.tensor(token_slots))
        out = proj(x)
        assert torch.equal(out[1], base[1])
        torch.testing.assert_close(out.float(), base.float() + delta, atol=0.1, rtol=2e-2)


def test_the_triton_route_of_a_projection_equals_the_cpu_route(model, adapters):
    """The CUDA route (the BGMV kernels, here in Triton's interpreter) adds what the CPU
    route adds."""
    pytest.importorskip("triton")
    from toolkit.kernels.dispatch import forced_triton

    manager = _manager(model, adapters, ["all7", "qv"])
    slot_of = manager.activate([("r0", "all7"), ("r1", "qv")])
    manager.batch.set([slot_of["qv"], -1, slot_of["all7"], slot_of["all7"], -1], "cpu")
    proj = model.layers[1].qkv_proj
    x = torch.randn(5, proj.in_features)
    cpu = proj(x)
    with forced_triton():
        triton = proj(x)
    torch.testing.assert_close(triton, cpu, atol=1e-4, rtol=1e-4)
