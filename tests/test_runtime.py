"""build_runtime's resolution of device.deterministic: on where every part is
batch-invariant, off with one line naming the part where one is not."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from toolkit.compose import compose_config
from toolkit.determinism import make_deterministic


class _Attention:
    def __init__(self, can: bool) -> None:
        self.can = can
        self.batch_invariant = False

    def enable_batch_invariance(self) -> bool:
        self.batch_invariant = self.can
        return self.can


def _model(quant: str, invariant: bool, variance: str | None = None,
           fixed_shape_holds: bool = False):
    """A model whose matmuls vary as ``variance`` says with the 2-row route (and with the
    fixed-shape route too unless ``fixed_shape_holds``)."""
    method = SimpleNamespace(name=quant, batch_invariant=invariant, invariant_min_rows=2)

    def batch_variance():
        return None if fixed_shape_holds and method.invariant_min_rows == 128 else variance

    return SimpleNamespace(quant_method=method, batch_variance=batch_variance)


def _resolve(overrides, device="cpu", quant=("none", True), attention=True, variance=None):
    cfg = compose_config(overrides)
    backend = _Attention(attention)
    model = _model(*quant, variance)
    return make_deterministic(cfg, device, model, backend, "torch_ref"), backend


def test_on_by_default_where_every_part_is_batch_invariant(caplog):
    with caplog.at_level(logging.WARNING):
        deterministic, attention = _resolve([])
    assert deterministic and attention.batch_invariant
    assert not caplog.records


@pytest.mark.parametrize("overrides, device, quant, attention, reason", [
    (["quant=q4_1"], "cpu", ("q4_1", False), True, "quant=q4_1 has no batch-invariant matmul"),
    (["device.cpu_kernels=torch"], "cpu", ("none", True), False, "device.cpu_kernels=torch"),
    (["cache.dtype=fp8_e4m3"], "cpu", ("none", True), False, "cache.dtype=fp8_e4m3"),
    ([], "cuda", ("none", False), True, "on cuda"),
])
def test_off_with_one_line_naming_the_part(caplog, overrides, device, quant, attention, reason):
    with caplog.at_level(logging.WARNING):
        deterministic, backend = _resolve(overrides, device, quant, attention)
    assert not deterministic
    assert [r.getMessage() for r in caplog.records if reason in r.getMessage()]
    assert len(caplog.records) == 1 and "\n" not in caplog.records[0].getMessage()


def test_opting_out_leaves_the_attention_alone(caplog):
    with caplog.at_level(logging.WARNING):
        deterministic, attention = _resolve(["device.deterministic=false"])
    assert not deterministic and not attention.batch_invariant
    assert not caplog.records


def test_off_where_this_cpus_matmul_is_not_batch_invariant(caplog):
    with caplog.at_level(logging.WARNING):
        deterministic, attention = _resolve([], variance="[576, 1536] at 1 rows")
    assert not deterministic and not attention.batch_invariant
    assert "changes a row's bits with the batch ([576, 1536] at 1 rows)" in caplog.text


def test_matmuls_fall_back_to_fixed_shape_calls_where_that_holds(caplog):
    cfg = compose_config([])
    model = _model("none", True, "[576, 1536] at 1 rows", fixed_shape_holds=True)
    with caplog.at_level(logging.WARNING):
        assert make_deterministic(cfg, "cpu", model, _Attention(True), "torch_ref")
    assert model.quant_method.invariant_min_rows == 128
    assert "calls of 128 rows" in caplog.text


def test_the_real_models_matmuls_pass_the_start_up_check(runtime):
    """On this CPU the check finds nothing (else the server says it is not deterministic)."""
    assert runtime.core.runner.model.batch_variance() is None
    assert runtime.resolved.deterministic
    assert runtime.core.runner.model.quant_method.invariant_min_rows == 2  # the fast route


def test_the_resolved_kernel_route_is_handed_to_every_layer_and_the_attention(runtime):
    """build_runtime decides the CPU kernel route once (device.cpu_kernels=auto: native
    here) and each object that runs a CPU kernel was built with it."""
    model, runner = runtime.core.runner.model, runtime.core.runner
    assert runtime.resolved.cpu_kernels == "native"
    routes = [model.kernels, model.rotary.kernels, runner.attention.kernels,
              *(layer.kernels for layer in model.layers)]
    assert all(route.is_native and route.ops is routes[0].ops for route in routes)
    assert runner.attention._native  # bfloat16 CPU cache: stores and decodes in C++
