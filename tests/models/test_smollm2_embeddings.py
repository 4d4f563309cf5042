"""Embedder on SmolLM2 vs transformers' final hidden states, pooled the same way."""

from __future__ import annotations

import pathlib

import pytest
import torch
import torch.nn.functional as F

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model, read_model_info
from toolkit.runner.embedder import Embedder

TEXTS = ["The capital of France is", "def fibonacci(n):", "Hi",
         "Once upon a time, in a small village, there lived a dragon who loved tea."]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prompts(smollm2_dir: pathlib.Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(smollm2_dir))
    return [tokenizer(t)["input_ids"] for t in TEXTS]


@pytest.fixture(scope="module")
def reference_hidden(smollm2_dir: pathlib.Path, prompts) -> list[torch.Tensor]:
    """transformers' final-normed hidden states [len, H] of each prompt (float32)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(smollm2_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        return [model.model(torch.tensor([p])).last_hidden_state[0] for p in prompts]


@pytest.fixture(scope="module")
def embedder(smollm2_dir: pathlib.Path) -> Embedder:
    info = read_model_info(smollm2_dir)
    model = load_model(smollm2_dir, torch.float32, "cpu")
    live_pool = KVCachePool(info.num_layers, 1, 16, info.num_kv_heads, info.head_dim,
                            torch.float32)
    attention = TorchRefBackend(live_pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)
    return Embedder(model, attention, page_size=16, device="cpu")


def test_last_token_pooling_matches_transformers(embedder, prompts, reference_hidden):
    ours = torch.tensor(embedder.embed(prompts, "last", normalize=True))  # [B, H]
    expected = F.normalize(torch.stack([h[-1] for h in reference_hidden]), dim=-1)
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, atol=2e-4, rtol=1e-3)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(prompts)), atol=1e-5)


def test_mean_pooling_without_normalizing_matches_transformers(embedder, prompts,
                                                               reference_hidden):
    ours = torch.tensor(embedder.embed(prompts, "mean", normalize=False))
    expected = torch.stack([h.mean(dim=0) for h in reference_hidden])
    torch.testing.assert_close(ours, expected, atol=2e-3, rtol=1e-3)


def test_a_batch_equals_its_prompts_one_by_one(embedder, prompts):
    together = torch.tensor(embedder.embed(prompts[1:3]))
    alone = torch.tensor([embedder.embed([p])[0] for p in prompts[1:3]])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_bad_arguments_are_value_errors(embedder, prompts):
    with pytest.raises(ValueError, match="pooling"):
        embedder.embed(prompts, "cls")
    with pytest.raises(ValueError, match="token"):
        embedder.embed([[]])
