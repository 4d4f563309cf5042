"""Mixture-of-experts weights under the quantization methods that can carry them.

An MoE block's experts load from the checkpoint as dense stacked tensors in the model dtype,
w13 [E, 2I, H] (each expert's gate rows, then its up rows) and w2 [E, H, I]; the model's
QuantMethod then decides what stays resident and how an expert multiplies
(toolkit/layers/moe.py's ``Experts`` contract), through the class registered under its
name in EXPERT_WEIGHTS:

- ``none``: the dense tensors; per expert a oneDNN-packed copy where the method packs its
  projections (``device.prepack_weights`` in bfloat16, or batch-invariant matmuls under
  ``device.deterministic``), through the same ``linear`` as the dense projections. On CUDA
  the stacked tensors feed the Triton fused-MoE kernel.
- ``q4_1``: every expert matrix requantized to Q4_1 (groups of ``quant.group_size`` input
  features, as toolkit/quant/q4_1.py does for projections). On the CPU in bfloat16 only
  the int4-packed codes stay resident (~0.3x of the bf16 bytes; torch's int4 kernel for
  few rows, dequantize + one matmul for many, toolkit/quant/awq_cpu.int4pack_linear);
  elsewhere (float32, CUDA) the dequantized weights run dense as for ``none``.

``awq`` and ``gptq`` checkpoints hold their own packed layout per dense projection, and
``fp8`` has no expert route here: ``create_expert_weights`` refuses them at load, naming
the methods that can. The router (the checkpoint's ``gate``) stays dense under every
method (``router_method``): quantizing it would move tokens between experts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from toolkit.layers.linear import linear, pack_weight
from toolkit.quant import awq_cpu
from toolkit.quant.base import ModelLoadError, QuantMethod
from toolkit.quant.linear import ShardLoadError
from toolkit.quant.q4_1 import dequantize_q4_1, quantize_q4_1, to_int4pack
from toolkit.registry import Registry

if TYPE_CHECKING:
    from toolkit.quant.none import NoQuant
    from toolkit.quant.q4_1 import Q4_1Method

EXPERT_PARTS = ("gate", "up", "down")
"""The matrices of one expert, as ``load_expert`` names them."""


class DenseExperts(nn.Module):
    """Dense expert weights (quant ``none``; the base of the other storages).

    ``dense``: the NoQuant method whose settings (pre-packing, batch invariance, its
    shortest invariant call) the experts' matmuls follow, as the dense projections do.
    """

    def __init__(self, dense: NoQuant, num_experts: int, hidden_size: int,
                 intermediate_size: int, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        super().__init__()
        self.dense = dense
        self.num_experts = num_experts
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.dtype = dtype
        self.device = torch.device(device)
        self.create_params()

    @staticmethod
    def router_method(method: QuantMethod) -> QuantMethod:
        """The dense method the MoE router runs on under ``method``."""
        return method

    def create_params(self) -> None:
        """(Re)create the empty stacked tensors (drops anything ``after_load`` made)."""
        shapes = {"w13": (self.num_experts, 2 * self.intermediate_size, self.hidden_size),
                  "w2": (self.num_experts, self.hidden_size, self.intermediate_size)}
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(
                torch.empty(shape, dtype=self.dtype, device=self.device), requires_grad=False))
        self.packed13: list[torch.Tensor | None] = [None] * self.num_experts
        self.packed2: list[torch.Tensor | None] = [None] * self.num_experts

    def _slot(self, part: str, expert: int) -> torch.Tensor:
        size = self.intermediate_size
        if part == "gate":
            return self.w13.data[expert, :size]  # [I, H]
        if part == "up":
            return self.w13.data[expert, size:]  # [I, H]
        return self.w2.data[expert]  # [H, I]

    def load_expert(self, part: str, expert: int, tensor: torch.Tensor) -> None:
        """Copy one checkpoint matrix of expert ``expert`` in (``part`` in EXPERT_PARTS)."""
        if part not in EXPERT_PARTS:
            raise ShardLoadError(f"no expert part {part!r}; expected {', '.join(EXPERT_PARTS)}")
        if not 0 <= expert < self.num_experts:
            raise ShardLoadError(f"expert {expert} of {self.num_experts}")
        target = self._slot(part, expert)
        if tuple(tensor.shape) != tuple(target.shape):
            raise ShardLoadError(f"shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
        if not tensor.dtype.is_floating_point:
            raise ShardLoadError(f"dtype {tensor.dtype}, expected a dense {self.dtype} weight")
        target.copy_(tensor)

    def finish_loading(self) -> None:
        """Every expert is in: convert them for the matmuls (once)."""
        self.after_load()

    def after_load(self) -> None:
        dense = self.dense
        if dense.prepack_weights or dense.batch_invariant:
            invariant = dense.batch_invariant
            self.packed13 = [pack_weight(w, batch_invariant=invariant) for w in self.w13.data]
            self.packed2 = [pack_weight(w, batch_invariant=invariant) for w in self.w2.data]

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.w13.data, self.w2.data

    def gate_up(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """x: [n, H] -> [n, 2I]."""
        return linear(x, self.w13.data[expert], None, self.packed13[expert],
                      self.dense.batch_invariant, self.dense.invariant_min_rows)

    def down(self, expert: int, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: [n, I] -> [n, H]."""
        return linear(hidden, self.w2.data[expert], None, self.packed2[expert],
                      self.dense.batch_invariant, self.dense.invariant_min_rows)

    def weight_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """(weight, packed copy or None) of one expert per matrix shape (start-up checks
        of the batch-invariant route, see LlamaForCausalLM.batch_variance)."""
        return [(self.w13.data[0], self.packed13[0]), (self.w2.data[0], self.packed2[0])]

    def resident_bytes(self) -> int:
        """Bytes of expert weights kept after loading (a packed copy counts twice)."""
        dense = sum(p.numel() * p.element_size() for p in self.parameters())
        return dense * (2 if self.packed13[0] is not None else 1)

    def extra_repr(self) -> str:
        return (f"num_experts={self.num_experts}, hidden_size={self.hidden_size}, "
                f"intermediate_size={self.intermediate_size}, storage={type(self).__name__}")


class Q4_1Experts(DenseExperts):
    """Experts requantized to Q4_1 at load time (see the module doc)."""

    def __init__(self, method: Q4_1Method, num_experts: int, hidden_size: int,
                 intermediate_size: int, dtype: torch.dtype,
                 device: torch.device | str) -> None:
        if method.gguf_blocks:
            raise ModelLoadError("q4_1 experts quantize dense checkpoint weights; a GGUF's "
                                 "Q4_1 blocks of a mixture-of-experts model are not supported")
        for features in (hidden_size, intermediate_size):
            if features % method.group_size:
                raise ModelLoadError(f"q4_1 group_size={method.group_size} does not divide "
                                     f"this model's expert width {features}")
        super().__init__(method.dense, num_experts, hidden_size, intermediate_size, dtype,
                         device)
        self.method = method

    @staticmethod
    def router_method(method: QuantMethod) -> QuantMethod:
        return method.dense  # Q4_1Method's dense twin (same pre-packing)

    def create_params(self) -> None:
        super().create_params()
        self.int4_13: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        """Per expert (packed codes, scales_and_zeros) of w13 once loaded on the int4 route."""
        self.int4_2: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        """The same for w2."""

    def _use_int4pack(self) -> bool:
        group_size = self.method.group_size
        return self.method.max_int4_tokens >= 1 and all(
            awq_cpu.can_use_int4pack(rows, group_size, self.dtype, self.device)
            for rows in (2 * self.intermediate_size, self.hidden_size))

    def after_load(self) -> None:
        group_size = self.method.group_size
        if self._use_int4pack():
            self.int4_13 = [to_int4pack(*quantize_q4_1(w, group_size), self.dtype)
                            for w in self.w13.data]
            self.int4_2 = [to_int4pack(*quantize_q4_1(w, group_size), self.dtype)
                           for w in self.w2.data]
            self.w13 = self.w2 = None  # only the packed codes stay resident
            return
        for stacked in (self.w13.data, self.w2.data):
            for weight in stacked:
                weight.copy_(dequantize_q4_1(*quantize_q4_1(weight, group_size), self.dtype))
        super().after_load()

    def stacked(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None if self.int4_13 is not None else super().stacked()

    def gate_up(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        if self.int4_13 is not None:
            return awq_cpu.int4pack_linear(x.contiguous(), *self.int4_13[expert], None)  # [n, 2I]
        return super().gate_up(expert, x)

    def down(self, expert: int, hidden: torch.Tensor) -> torch.Tensor:
        if self.int4_2 is not None:
            return awq_cpu.int4pack_linear(hidden.contiguous(), *self.int4_2[expert],
                                           None)  # [n, H]
        return super().down(expert, hidden)

    def weight_pairs(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        return [] if self.int4_13 is not None else super().weight_pairs()

    def resident_bytes(self) -> int:
        """Bytes of expert weights kept after loading (the codes, or the dense copies)."""
        if self.int4_13 is None:
            return sum(p.numel() * p.element_size() for p in self.parameters())
        return sum(t.numel() * t.element_size()
                   for pair in self.int4_13 + self.int4_2 for t in pair)


EXPERT_WEIGHTS = Registry[type[DenseExperts]]("mixture-of-experts weight storage")
"""quant.method name -> the class that stores a block's experts under it."""


@EXPERT_WEIGHTS.register("none")
def _dense() -> type[DenseExperts]:
    return DenseExperts


@EXPERT_WEIGHTS.register("q4_1")
def _q4_1() -> type[DenseExperts]:
    return Q4_1Experts


def expert_storage(method: QuantMethod) -> type[DenseExperts]:
    """The storage class for experts under ``method``; ModelLoadError (one line, naming
    the methods that can) where the method cannot carry experts."""
    if method.name not in EXPERT_WEIGHTS:
        raise ModelLoadError(f"quant={method.name} cannot hold mixture-of-experts weights; "
                             f"methods that can: {', '.join(EXPERT_WEIGHTS.names())}")
    return EXPERT_WEIGHTS.get(method.name)()


def create_expert_weights(method: QuantMethod, num_experts: int, hidden_size: int,
                          intermediate_size: int, dtype: torch.dtype,
                          device: torch.device | str) -> DenseExperts:
    """One MoE block's (empty) expert weights under ``method``."""
    return expert_storage(method)(method, num_experts, hidden_size, intermediate_size, dtype,
                                  device)
