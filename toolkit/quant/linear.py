"""QuantLinear: a (possibly fused) projection whose storage and matmul a QuantMethod owns."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from toolkit.quant.base import ParamSpec

if TYPE_CHECKING:
    from toolkit.quant.base import QuantMethod


class ShardLoadError(ValueError):
    """A checkpoint tensor that does not fit its slot in a QuantLinear (shape or dtype)."""


class QuantLinear(nn.Module):
    """A (possibly fused) projection ``y = x @ W^T + b`` whose storage a QuantMethod owns.

    ``output_sizes`` are the output features of the fused parts, in order (q, k, v for a
    fused qkv projection; one entry for a plain one). The method's ``param_specs`` name the
    checkpoint tensors (``weight``; ``qweight``/``qzeros``/``scales`` ...); each becomes a
    parameter of that name, and ``load_shard`` copies part ``shard`` of a checkpoint tensor
    into its slice along the spec's ``output_dim``. ``finish_loading`` runs the method's
    ``after_load`` once every tensor is in; ``forward`` is ``method.apply``.
    """

    def __init__(self, in_features: int, output_sizes: tuple[int, ...] | list[int], bias: bool,
                 method: QuantMethod, dtype: torch.dtype,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.in_features = in_features
        self.output_sizes = tuple(output_sizes)
        self.out_features = sum(self.output_sizes)
        self.has_bias = bias
        self.method = method
        self.dtype = dtype
        self.device = torch.device(device)
        self.lora = None
        """A toolkit.lora LoraProjection when LoRA adapters are served: ``forward`` adds
        its per-row delta (``add_delta(x, y) -> y``); None: the plain projection."""
        self.create_params()

    def create_params(self) -> None:
        """(Re)create the empty checkpoint parameters (drops anything after_load made)."""
        for name in list(self._parameters) + list(self._buffers):
            delattr(self, name)
        self.specs: dict[str, ParamSpec] = dict(self.method.param_specs(
            self.in_features, self.out_features, self.dtype))
        if self.has_bias:
            self.specs["bias"] = ParamSpec((self.out_features,), self.dtype, output_dim=0)
        for name, spec in self.specs.items():
            self.register_parameter(name, nn.Parameter(
                torch.empty(spec.shape, dtype=spec.dtype, device=self.device),
                requires_grad=False))
        if not self.has_bias:
            self.bias = None
        self._loaded_shared: set[str] = set()
        self.loaded = False

    def shard_view(self, name: str, shard: int = 0) -> torch.Tensor:
        """The slice of parameter ``name`` that part ``shard`` of the checkpoint fills."""
        spec, param = self.specs[name], getattr(self, name)
        if spec.output_dim is None:
            return param.data
        start = sum(self.output_sizes[:shard])
        if start % spec.output_pack or self.output_sizes[shard] % spec.output_pack:
            raise ShardLoadError(f"output part {shard} ({self.output_sizes[shard]} features) "
                                 f"does not align to packs of {spec.output_pack}")
        return param.data.narrow(spec.output_dim, start // spec.output_pack,
                                 self.output_sizes[shard] // spec.output_pack)

    def load_shard(self, name: str, tensor: torch.Tensor, shard: int = 0) -> None:
        """Copy checkpoint tensor ``name`` (part ``shard`` of a fused projection) in place."""
        if name not in self.specs:
            raise ShardLoadError(f"no tensor {name!r}; expected {', '.join(self.specs)}")
        target = self.shard_view(name, shard)
        if tuple(tensor.shape) != tuple(target.shape):
            raise ShardLoadError(f"shape {tuple(tensor.shape)}, expected {tuple(target.shape)}")
        if tensor.dtype.is_floating_point != target.dtype.is_floating_point:
            raise ShardLoadError(f"dtype {tensor.dtype}, expected {target.dtype}")
        if self.specs[name].output_dim is None and name in self._loaded_shared:
            if not torch.equal(target, tensor.to(target.dtype)):
                raise ShardLoadError(f"differs between the fused parts {self.output_sizes}")
            return
        target.copy_(tensor)
        self._loaded_shared.add(name)

    def checkpoint_names(self) -> tuple[str, ...]:
        """Suffixes of the checkpoint tensors each part has (``weight``, ``bias`` ...)."""
        return tuple(self.specs)

    def finish_loading(self) -> None:
        """Every tensor is in: let the method convert them for ``apply`` (once)."""
        self.method.after_load(self)
        self.bias_tensor = None if self.bias is None else self.bias.detach()
        self.loaded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [T, in_features] -> [T, out_features] (plus the LoRA delta of each row)."""
        y = self.method.apply(self, x, self.bias_tensor)
        if self.lora is not None:
            return self.lora.add_delta(x, y)
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, output_sizes={self.output_sizes}, "
                f"bias={self.has_bias}, method={self.method.name}")
