"""The SigLIP vision tower of Idefics3 / SmolVLM, in plain torch.

A ViT over one image's tiles: a patch convolution, learned position embeddings looked
up NaViT-style (a tile with padding maps its real patches onto the full grid of
positions by fractional coordinates), pre-norm encoder layers with bidirectional
attention over the real patches, and a final LayerNorm. Module and parameter names are
the checkpoint's (``model.vision_model.`` stripped), so a state dict loads as it is.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = {
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu": F.gelu,
}


class SiglipEmbeddings(nn.Module):
    """Patches -> embeddings plus (fractionally bucketed) position embeddings."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        width, self.patch_size = config["hidden_size"], config["patch_size"]
        self.patch_embedding = nn.Conv2d(config.get("num_channels", 3), width,
                                         kernel_size=self.patch_size, stride=self.patch_size)
        self.num_patches_per_side = config["image_size"] // self.patch_size
        self.position_embedding = nn.Embedding(self.num_patches_per_side ** 2, width)

    def position_ids(self, patch_mask: torch.Tensor) -> torch.Tensor:
        """patch_mask: [N, h, w] bool (real patches) -> position ids [N, h * w]; a tile's
        real patches spread over the whole grid of positions, padding takes position 0."""
        side = self.num_patches_per_side
        boundaries = torch.arange(1 / side, 1.0, 1 / side, device=patch_mask.device)
        rows = patch_mask[:, :, 0].sum(dim=1)  # [N]
        cols = patch_mask[:, 0, :].sum(dim=1)  # [N]

        def buckets(count: torch.Tensor, size: int) -> torch.Tensor:
            steps = torch.arange(size, device=patch_mask.device, dtype=torch.float32)
            coords = (steps[None, :] * (1.0 / count)[:, None]).clamp(max=1.0 - 1e-6)
            return torch.bucketize(coords, boundaries, right=True)  # [N, size]

        grid = (buckets(rows, patch_mask.shape[1])[:, :, None] * side
                + buckets(cols, patch_mask.shape[2])[:, None, :])  # [N, h, w]
        grid = grid.reshape(patch_mask.shape[0], -1)
        return torch.where(patch_mask.reshape(grid.shape), grid, torch.zeros_like(grid))

    def forward(self, pixel_values: torch.Tensor, patch_mask: torch.Tensor) -> torch.Tensor:
        """pixel_values: [N, C, H, W]; patch_mask: [N, H / p, W / p] -> [N, P, width]."""
        patches = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # [N, P, width]
        return patches + self.position_embedding(self.position_ids(patch_mask))


class SiglipAttention(nn.Module):
    """Bidirectional multi-head attention with biased projections."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        width = config["hidden_size"]
        self.num_heads = config["num_attention_heads"]
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """x: [N, P, width]; key_mask: [N, 1, 1, P] bool (attendable keys) or None."""
        num_tiles, num_patches, width = x.shape

        def heads(proj: nn.Linear) -> torch.Tensor:  # [N, heads, P, head_dim]
            return proj(x).view(num_tiles, num_patches, self.num_heads, -1).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q_proj), heads(self.k_proj),
                                             heads(self.v_proj), attn_mask=key_mask)
        return self.out_proj(out.transpose(1, 2).reshape(num_tiles, num_patches, width))


class SiglipMLP(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        act = config.get("hidden_act", "gelu_pytorch_tanh")
        if act not in _ACTIVATIONS:
            raise ValueError(f"vision hidden_act {act!r} is not supported; supported: "
                             f"{', '.join(_ACTIVATIONS)}")
        self.activation = _ACTIVATIONS[act]
        self.fc1 = nn.Linear(config["hidden_size"], config["intermediate_size"])
        self.fc2 = nn.Linear(config["intermediate_size"], config["hidden_size"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        width, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-6)
        self.layer_norm1 = nn.LayerNorm(width, eps=eps)
        self.self_attn = SiglipAttention(config)
        self.layer_norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = SiglipMLP(config)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), key_mask)
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(config)
                                    for _ in range(config["num_hidden_layers"]))


class SiglipVisionModel(nn.Module):
    """Image tiles -> patch features, built from a ``vision_config`` dict."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.patch_size = config["patch_size"]
        self.embeddings = SiglipEmbeddings(config)
        self.encoder = SiglipEncoder(config)
        self.post_layernorm = nn.LayerNorm(config["hidden_size"],
                                           eps=config.get("layer_norm_eps", 1e-6))

    def patch_mask(self, pixel_mask: torch.Tensor) -> torch.Tensor:
        """pixel_mask: [N, H, W] (real pixels) -> [N, H / p, W / p] bool: patches holding
        at least one real pixel."""
        p = self.patch_size
        tiles = pixel_mask.unfold(1, p, p).unfold(2, p, p)  # [N, H/p, W/p, p, p]
        return tiles.sum(dim=(-1, -2)) > 0

    def forward(self, pixel_values: torch.Tensor,
                pixel_mask: torch.Tensor | None = None) -> torch.Tensor:
        """pixel_values: [N, C, H, W]; pixel_mask: [N, H, W] (None: all real)
        -> [N, P, width], P = (H / p) * (W / p)."""
        if pixel_mask is None:
            pixel_mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[2:],
                                    dtype=torch.bool, device=pixel_values.device)
        patch_mask = self.patch_mask(pixel_mask)
        x = self.embeddings(pixel_values, patch_mask)
        flat = patch_mask.reshape(patch_mask.shape[0], -1)  # [N, P]
        key_mask = None if bool(flat.all()) else flat[:, None, None, :]
        for layer in self.encoder.layers:
            x = layer(x, key_mask)
        return self.post_layernorm(x)
