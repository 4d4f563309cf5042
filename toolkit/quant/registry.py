"""QUANT_METHODS: quantization scheme name -> lazy QuantMethod factory.

Every factory has the same signature::

    factory(cfg: QuantConfig, checkpoint: dict, prepack_weights: bool) -> QuantMethod

``cfg`` is the ``quant`` config group; ``checkpoint`` is config.json's
``quantization_config`` ({} for a dense checkpoint); ``prepack_weights`` is
``device.prepack_weights``. A factory raises ModelLoadError (toolkit.quant.base) when
the checkpoint cannot be served by its scheme, naming the mismatch (``quant=awq`` on a
checkpoint without an AWQ quantization_config, an unsupported bit width ...).

``resolve_method_name`` turns ``quant.method`` (``auto`` included) and the checkpoint into
a registry name: ``auto`` takes the checkpoint's ``quant_method`` (``none`` when it has
none); an explicit method must match a quantized checkpoint's ``quant_method`` (a dense
checkpoint accepts any method: ``fp8`` quantizes at load time, ``awq`` refuses it itself).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from toolkit.quant.base import ModelLoadError
from toolkit.registry import Registry

if TYPE_CHECKING:
    from toolkit.config.schema import QuantConfig
    from toolkit.quant.base import QuantMethod

QUANT_METHODS: Registry[QuantMethod] = Registry("quantization method")

AUTO = "auto"
"""``quant.method`` value that takes the scheme from the checkpoint."""


@QUANT_METHODS.register("none")
def _none(cfg: QuantConfig, checkpoint: dict[str, Any], prepack_weights: bool) -> QuantMethod:
    from toolkit.quant.none import create_none

    return create_none(cfg, checkpoint, prepack_weights)


@QUANT_METHODS.register("awq")
def _awq(cfg: QuantConfig, checkpoint: dict[str, Any], prepack_weights: bool) -> QuantMethod:
    from toolkit.quant.awq import create_awq

    return create_awq(cfg, checkpoint, prepack_weights)


@QUANT_METHODS.register("fp8")
def _fp8(cfg: QuantConfig, checkpoint: dict[str, Any], prepack_weights: bool) -> QuantMethod:
    from toolkit.quant.fp8 import create_fp8

    return create_fp8(cfg, checkpoint, prepack_weights)


@QUANT_METHODS.register("gptq")
def _gptq(cfg: QuantConfig, checkpoint: dict[str, Any], prepack_weights: bool) -> QuantMethod:
    from toolkit.quant.gptq import create_gptq

    return create_gptq(cfg, checkpoint, prepack_weights)


@QUANT_METHODS.register("q4_1")
def _q4_1(cfg: QuantConfig, checkpoint: dict[str, Any], prepack_weights: bool) -> QuantMethod:
    from toolkit.quant.q4_1 import create_q4_1

    return create_q4_1(cfg, checkpoint, prepack_weights)


@QUANT_METHODS.register("w8a8")
def _w8a8(cfg: QuantConfig, checkpoint: dict[str, Any], prepack_weights: bool) -> QuantMethod:
    from toolkit.quant.w8a8 import create_w8a8

    return create_w8a8(cfg, checkpoint, prepack_weights)


def method_names() -> tuple[str, ...]:
    """Valid ``quant.method`` values: ``auto`` and every registered scheme."""
    return (AUTO, *QUANT_METHODS.names())


def checkpoint_quant_config(hf_config: dict[str, Any]) -> dict[str, Any]:
    """config.json's ``quantization_config`` ({} for a dense checkpoint)."""
    return dict(hf_config.get("quantization_config") or {})


def resolve_method_name(requested: str, checkpoint: dict[str, Any]) -> str:
    """The registry name that serves ``checkpoint`` under ``quant.method=requested``."""
    detected = str(checkpoint.get("quant_method", "")).lower() or None
    if requested == AUTO:
        name = detected or "none"
        if name not in QUANT_METHODS:
            raise ModelLoadError(
                f"the checkpoint's quantization_config.quant_method={detected!r} is not "
                f"supported; supported: {', '.join(QUANT_METHODS.names())}")
        return name
    if detected is not None and requested != detected:
        raise ModelLoadError(
            f"quant.method={requested!r} but the checkpoint is {detected}-quantized "
            f"(config.json quantization_config); use quant=auto or quant={detected}")
    QUANT_METHODS.get(requested)  # unknown name: the error lists the valid ones
    return requested


def create_quant_method(cfg: QuantConfig, hf_config: dict[str, Any],
                        prepack_weights: bool = True) -> QuantMethod:
    """The QuantMethod for a model whose config.json is ``hf_config``. A GGUF file's Q4_1
    blocks (quantization_config format gguf) serve ``auto``/``q4_1``; any other method
    takes the file as a dense checkpoint (its tensors dequantized at load)."""
    checkpoint = checkpoint_quant_config(hf_config)
    if checkpoint.get("format") == "gguf" and cfg.method not in (AUTO, checkpoint["quant_method"]):
        checkpoint = {}
    name = resolve_method_name(cfg.method, checkpoint)
    if cfg.int8_lm_head and name != "w8a8":
        raise ModelLoadError(f"quant.int8_lm_head=true applies to quant=w8a8, not {name} "
                             "(q4_1 always has an int8 head)")
    return QUANT_METHODS.get(name)(cfg, checkpoint, prepack_weights)
