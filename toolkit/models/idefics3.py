"""Idefics3 / SmolVLM: a SigLIP vision tower, a pixel-shuffle connector and a Llama LM.

An image arrives as tiles ([N, 3, S, S] pixel values, S the vision ``image_size``); each
tile becomes ``image_seq_len = (S / patch)^2 / scale_factor^2`` embeddings in the text
model's width (``encode_images``). The prompt holds one ``<image>`` token per embedding
(the processor expands them); ``forward`` takes, besides the token ids, the rows of the
batch that are image tokens and the embeddings to put there, and otherwise runs the
text model (toolkit.models.llama) as it is: paged KV, the same kernels, the same
quantization of its projections. Checkpoint names are transformers'
(``model.vision_model.*``, ``model.connector.*``, ``model.text_model.*``, ``lm_head.*``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.attention.base import AttentionBackend
from toolkit.kernels.route import TORCH, KernelRoute
from toolkit.models.llama import LlamaForCausalLM, WeightLoadError
from toolkit.models.siglip import SiglipVisionModel
from toolkit.quant.base import QuantMethod

_VISION_PREFIX = "model.vision_model."
_CONNECTOR_PREFIX = "model.connector."
_TEXT_PREFIX = "model.text_model."


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The text model's config.json dict (Llama defaults filled in), tied as the whole
    checkpoint says."""
    from transformers import LlamaConfig

    text = LlamaConfig(**config.get("text_config", {})).to_dict()
    text["architectures"] = ["LlamaForCausalLM"]
    text["tie_word_embeddings"] = bool(config.get("tie_word_embeddings",
                                                  text.get("tie_word_embeddings", False)))
    return text


def vision_config(config: dict[str, Any]) -> dict[str, Any]:
    """The vision tower's config dict (SigLIP defaults filled in)."""
    from transformers import Idefics3VisionConfig

    return Idefics3VisionConfig(**config.get("vision_config", {})).to_dict()


class Idefics3Connector(nn.Module):
    """Pixel shuffle (each ``scale x scale`` block of patches into one vector) and a
    linear projection into the text model's width."""

    def __init__(self, vision_width: int, text_width: int, scale_factor: int) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.modality_projection = nn.Module()
        self.modality_projection.proj = nn.Linear(vision_width * scale_factor ** 2,
                                                  text_width, bias=False)

    def pixel_shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """[N, side * side, C] -> [N, side^2 / s^2, C * s^2], transformers' order."""
        num_tiles, num_patches, width = x.shape
        side, s = int(num_patches ** 0.5), self.scale_factor
        x = x.view(num_tiles, side, side // s, width * s)  # merge s columns
        x = x.permute(0, 2, 1, 3).reshape(num_tiles, side // s, side // s, width * s * s)
        return x.permute(0, 2, 1, 3).reshape(num_tiles, num_patches // s ** 2, width * s * s)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.modality_projection.proj(self.pixel_shuffle(features))


class Idefics3ForConditionalGeneration(nn.Module):
    """Built from the checkpoint's config.json dict, like every registered architecture
    (``cls(config, dtype=, device=, quant_method=, kernels=)``). The vision tower and
    connector stay dense in ``dtype``; ``quant_method`` covers the text model's
    projections."""

    def __init__(self, config: dict[str, Any], dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu",
                 quant_method: QuantMethod | None = None, *,
                 kernels: KernelRoute = TORCH) -> None:
        super().__init__()
        self.dtype = dtype
        self.image_token_id = int(config["image_token_id"])
        """The ``<image>`` token whose positions take image embeddings."""
        vision = vision_config(config)
        text = text_config(config)
        self.config = {**config, "vocab_size": text["vocab_size"]}
        """config.json, with the text model's vocab_size at the top (the logits' width,
        which the runtime reads there)."""
        self.language_model = LlamaForCausalLM(text, dtype, device, quant_method,
                                               kernels=kernels)
        self.quant_method = self.language_model.quant_method
        self.vision_model = SiglipVisionModel(vision).to(device=device, dtype=dtype)
        scale = int(config.get("scale_factor", 2))
        self.connector = Idefics3Connector(vision["hidden_size"], text["hidden_size"],
                                           scale).to(device=device, dtype=dtype)
        self.vision_model.requires_grad_(False)
        self.connector.requires_grad_(False)
        side = vision["image_size"] // vision["patch_size"]
        self.image_seq_len = side * side // scale ** 2
        """Embeddings (and ``<image>`` tokens) per tile."""

    @torch.no_grad()
    def encode_images(self, pixel_values: torch.Tensor,
                      pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One image's tiles: pixel_values [N, 3, S, S], pixel_mask [N, S, S] (real
        pixels; None: all) -> embeddings [N * image_seq_len, text hidden], in the order
        of the image's ``<image>`` tokens."""
        features = self.vision_model(pixel_values.to(self.dtype), pixel_mask)  # [N, P, Cv]
        embeds = self.connector(features)  # [N, image_seq_len, hidden]
        return embeds.reshape(-1, embeds.shape[-1])

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor,
                attn: AttentionBackend,
                image_embeds: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> torch.Tensor:
        """input_ids, positions: [T]; image_embeds: (rows [M] int64, embeddings
        [M, hidden]) to put at those rows of the batch (image tokens), or None
        -> final-normed hidden states [T, hidden]."""
        if image_embeds is None:
            return self.language_model(input_ids, positions, attn)
        rows, embeds = image_embeds
        hidden = F.embedding(input_ids, self.language_model.embed_tokens)  # [T, hidden]
        hidden = hidden.index_copy(0, rows, embeds.to(hidden.dtype))
        return self.language_model(input_ids, positions, attn, inputs_embeds=hidden)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.language_model.compute_logits(hidden)

    def pack_weights(self) -> None:
        self.language_model.pack_weights()

    def unpack_weights(self) -> None:
        self.language_model.unpack_weights()

    def batch_variance(self) -> str | None:
        return self.language_model.batch_variance()

    @property
    def layers(self) -> nn.ModuleList:
        """The text model's decoder layers (what the runtime sizes the KV cache by)."""
        return self.language_model.layers

    @torch.no_grad()
    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Route each checkpoint tensor to the vision tower, the connector or the text
        model (under its Llama names); every tensor of the first two must be present."""
        vision: dict[str, torch.Tensor] = {}
        connector: dict[str, torch.Tensor] = {}

        def text_weights() -> Iterable[tuple[str, torch.Tensor]]:
            for name, tensor in weights:
                if name.startswith(_VISION_PREFIX):
                    vision[name.removeprefix(_VISION_PREFIX)] = tensor
                elif name.startswith(_CONNECTOR_PREFIX):
                    connector[name.removeprefix(_CONNECTOR_PREFIX)] = tensor
                elif name.startswith(_TEXT_PREFIX):
                    yield "model." + name.removeprefix(_TEXT_PREFIX), tensor
                else:
                    yield name, tensor

        self.language_model.load_weights(text_weights())
        _load_module(self.vision_model, vision, _VISION_PREFIX)
        _load_module(self.connector, connector, _CONNECTOR_PREFIX)


def _load_module(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Copy a complete state dict in, naming what is missing, extra or misshapen."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        problem = (f"missing {prefix}{missing[0]}" if missing
                   else f"unexpected weight {prefix}{extra[0]!r}")
        raise WeightLoadError(f"Idefics3 checkpoint: {problem} "
                              f"({len(missing)} missing, {len(extra)} unexpected)")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise WeightLoadError(f"{prefix}{name}: shape {tuple(tensor.shape)}, "
                                  f"expected {tuple(expected[name].shape)}")
    module.load_state_dict(tensors)
