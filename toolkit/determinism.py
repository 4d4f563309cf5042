"""``device.deterministic`` as far as the built parts allow: a request's tokens never depend
on what else runs in its batch (docs/determinism.md). build_runtime asks here once the
model, its LoRA slots and the attention backend are built."""

from __future__ import annotations

import logging

import torch

from toolkit.config.schema import ToolkitConfig

logger = logging.getLogger(__name__)


def make_deterministic(cfg: ToolkitConfig, device: str, model: torch.nn.Module, attention,
                       attention_backend: str, lora=None) -> bool:
    """device.deterministic as far as the built parts allow (the matmuls were asked at
    load time); says in one line why not where it was asked for and cannot be."""
    if not cfg.device.deterministic:
        logger.info("device.deterministic=false: outputs may depend on the batch")
        return False
    blockers = []
    if device != "cpu":
        blockers.append(f"on {device} the GPU libraries choose their reduction splits by "
                        "batch shape")
    elif not model.quant_method.batch_invariant:
        blockers.append(f"quant={model.quant_method.name} has no batch-invariant matmul "
                        "(quant=none has)")
    elif (variance := settle_invariant_matmuls(model)) is not None:
        blockers.append(f"oneDNN's matmul on this CPU changes a row's bits with the batch "
                        f"({variance})")
    elif lora is not None and (variance := lora.batch_variance()) is not None:
        blockers.append(f"oneDNN's matmul on this CPU changes a LoRA row's bits with the "
                        f"batch ({variance})")
    if not blockers and not attention.enable_batch_invariance():
        blockers.append(f"attention={attention_backend} with device.cpu_kernels="
                        f"{cfg.device.cpu_kernels}, cache.dtype={cfg.cache.dtype} is not "
                        "batch-invariant (the native kernels on an unquantized cache are)")
    if blockers:
        logger.warning("not deterministic: %s", "; ".join(blockers))
    return not blockers


def settle_invariant_matmuls(model: torch.nn.Module) -> str | None:
    """Give the model's batch-invariant matmuls the first shortest call (INVARIANT_MIN_ROWS)
    whose rows keep their bits on this CPU; None, or where the last one failed."""
    from toolkit.layers.linear import INVARIANT_MIN_ROWS

    for min_rows in INVARIANT_MIN_ROWS:
        model.quant_method.invariant_min_rows = min_rows
        variance = model.batch_variance()
        if variance is None:
            if min_rows != INVARIANT_MIN_ROWS[0]:
                logger.warning("batch-invariant matmuls in calls of %d rows: this CPU's "
                               "oneDNN gave a row other bits with shorter calls", min_rows)
            return None
    return variance
