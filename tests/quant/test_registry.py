"""QUANT_METHODS names, quant.method resolution against the checkpoint, and conf/quant/."""

from __future__ import annotations

import pytest

from toolkit.compose import compose_config
from toolkit.config.errors import ConfigError
from toolkit.config.schema import QuantConfig
from toolkit.config.store import group_options
from toolkit.models.loader import ModelLoadError
from toolkit.quant.awq import AWQMethod
from toolkit.quant.none import NoQuant
from toolkit.quant.registry import (
    QUANT_METHODS,
    create_quant_method,
    method_names,
    resolve_method_name,
)

AWQ_CONFIG = {"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": True,
              "version": "gemm"}


def test_registry_has_none_and_awq_and_auto_is_a_valid_method():
    assert {"none", "awq"} <= set(QUANT_METHODS.names())
    assert method_names()[0] == "auto" and set(QUANT_METHODS.names()) <= set(method_names())


def test_auto_follows_the_checkpoint():
    assert resolve_method_name("auto", {}) == "none"
    assert resolve_method_name("auto", AWQ_CONFIG) == "awq"
    assert resolve_method_name("awq", AWQ_CONFIG) == "awq"
    assert resolve_method_name("none", {}) == "none"


def test_auto_on_an_unsupported_scheme_names_it():
    with pytest.raises(ModelLoadError, match="quant_method='bitnet' is not supported"):
        resolve_method_name("auto", {"quant_method": "bitnet"})


def test_explicit_method_that_contradicts_a_quantized_checkpoint_is_refused():
    with pytest.raises(ModelLoadError, match="quant.method='none' but the checkpoint is awq"):
        create_quant_method(QuantConfig(method="none"), {"quantization_config": AWQ_CONFIG})


def test_awq_on_a_dense_checkpoint_is_refused():
    with pytest.raises(ModelLoadError, match="no AWQ quantization_config"):
        create_quant_method(QuantConfig(method="awq"), {})


def test_factories_build_the_configured_methods():
    dense = create_quant_method(QuantConfig(), {}, prepack_weights=True)
    assert isinstance(dense, NoQuant) and dense.prepack_weights
    awq = create_quant_method(QuantConfig(), {"quantization_config": AWQ_CONFIG})
    assert isinstance(awq, AWQMethod) and awq.group_size == 64
    # AutoAWQ's own key spellings (w_bit, q_group_size) are read too
    legacy = {"quant_method": "awq", "w_bit": 4, "q_group_size": 32, "version": "GEMM"}
    assert create_quant_method(QuantConfig(), {"quantization_config": legacy}).group_size == 32


@pytest.mark.parametrize("change, message", [
    ({"bits": 8}, "awq bits=8 is not supported; supported: 4"),
    ({"version": "gemv"}, "awq version='gemv' is not supported; supported: gemm"),
    ({"group_size": 256}, "awq group_size=256 is not supported; supported: 32, 64, 128"),
    ({"zero_point": False}, "awq zero_point=false is not supported"),
    ({"modules_to_not_convert": ["visual"]}, r"modules_to_not_convert=\['visual'\]"),
])
def test_unsupported_awq_settings_are_named(change: dict, message: str):
    with pytest.raises(ModelLoadError, match=message):
        create_quant_method(QuantConfig(), {"quantization_config": {**AWQ_CONFIG, **change}})


def test_group_size_override_must_agree_with_the_checkpoint():
    cfg = QuantConfig(method="awq", group_size=128)
    with pytest.raises(ModelLoadError, match="quant.group_size=128 but the checkpoint's "
                                             "quantization_config has group_size=64"):
        create_quant_method(cfg, {"quantization_config": AWQ_CONFIG})


def test_conf_quant_options_compose():
    assert {"auto", "none", "awq"} <= set(group_options("quant"))
    assert compose_config([]).quant.method == "auto"
    cfg = compose_config(["quant=awq", "quant.group_size=64"])
    assert (cfg.quant.method, cfg.quant.group_size) == ("awq", 64)
    assert compose_config(["quant=none"]).quant.method == "none"


def test_unknown_method_fails_at_compose_listing_the_choices():
    with pytest.raises(ConfigError, match="quant.method='int3' is not valid; valid choices: "
                                          "auto, .*awq.*none"):
        compose_config(["quant.method=int3"])


def test_every_scheme_passes_resolution_on_a_dense_checkpoint():
    """fp8 quantizes a dense checkpoint at load time; awq refuses it in its own factory."""
    for name in QUANT_METHODS.names():
        assert resolve_method_name(name, {}) == name
