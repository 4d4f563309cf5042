"""Idefics3 / SmolVLM vs transformers on a tiny random checkpoint: the same image and
text give the same logits through our loader, vision tower, connector and paged Llama,
prefilled whole and in chunks, and through the real engine (greedy tokens and prompt
logprobs); each image is encoded once per prefill; its pages are cached by its hash."""

from __future__ import annotations

import pathlib

import pytest
import torch
import transformers
from paged_batch import build_forward_batch
from tiny_vlm import build_vlm_runtime, random_image, save_tiny_vlm

from toolkit.attention.torch_ref import TorchRefBackend
from toolkit.kv.cache_pool import KVCachePool
from toolkit.models.loader import load_model, read_model_info
from toolkit.protocol import SamplingParams
from toolkit.tokenizer.images import ImagePrompts

PAGE_SIZE = 4
PROMPT = "User:<image>Describe this image.<end_of_utterance>\nAssistant:"


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory) -> pathlib.Path:
    directory = tmp_path_factory.mktemp("tiny-vlm")
    save_tiny_vlm(directory)
    return directory


@pytest.fixture(scope="module")
def hf_vlm(vlm_dir):
    model = transformers.Idefics3ForConditionalGeneration.from_pretrained(
        vlm_dir, dtype=torch.float32).eval()
    return model, transformers.AutoProcessor.from_pretrained(vlm_dir)


def _hf_inputs(processor, image, **kwargs) -> dict:
    return dict(processor(images=[image], text=[PROMPT], return_tensors="pt", **kwargs))


def _hf_logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[0].float()  # [L, vocab]


def _paged(vlm_dir):
    model = load_model(vlm_dir, torch.float32, "cpu")
    info = read_model_info(vlm_dir)
    pool = KVCachePool(info.num_layers, num_pages=64, page_size=PAGE_SIZE,
                       num_kv_heads=info.num_kv_heads, head_dim=info.head_dim,
                       dtype=torch.float32)
    return model, TorchRefBackend(pool, info.num_qo_heads, info.num_kv_heads, info.head_dim)


def _our_logits(model, attn, ids: list[int], embeds: torch.Tensor,
                chunk_ends: list[int]) -> torch.Tensor:
    """Prefill ``ids`` in chunks ending at ``chunk_ends``, image embeddings merged at the
    image tokens of each chunk -> logits at every position [L, vocab]."""
    slots = [p for p, token in enumerate(ids) if token == model.image_token_id]
    pages = [63 - 3 * i for i in range(-(-len(ids) // PAGE_SIZE))]  # scattered, descending
    logits, start = [], 0
    for end in chunk_ends:
        batch = build_forward_batch([(ids[start:end], start, pages)], PAGE_SIZE)
        mine = [k for k, p in enumerate(slots) if start <= p < end]
        rows = torch.tensor([slots[k] - start for k in mine], dtype=torch.int64)
        attn.plan(batch)
        with torch.no_grad():
            hidden = model(batch.input_ids, batch.positions, attn,
                           image_embeds=(rows, embeds[mine]) if mine else None)
            logits.append(model.compute_logits(hidden))
        start = end
    return torch.cat(logits)


@pytest.mark.parametrize("splitting", [True, False], ids=["tiles", "global-only"])
def test_logits_match_transformers_whole_and_chunked(vlm_dir, hf_vlm, splitting: bool):
    hf_model, processor = hf_vlm
    image = random_image(70, 40)  # not square: tiles and padding
    inputs = _hf_inputs(processor, image, do_image_splitting=splitting)
    expected = _hf_logits(hf_model, inputs)
    model, attn = _paged(vlm_dir)
    ids = inputs["input_ids"][0].tolist()
    embeds = model.encode_images(inputs["pixel_values"][0],
                                 inputs["pixel_attention_mask"][0].bool())
    assert embeds.shape[0] == ids.count(model.image_token_id) > 0
    whole = _our_logits(model, attn, ids, embeds, [len(ids)])
    torch.testing.assert_close(whole, expected, atol=1e-4, rtol=1e-4)
    first_image = ids.index(model.image_token_id)
    chunk_ends = [first_image + 2, first_image + 7, len(ids) - 3, len(ids)]  # cut images
    chunked = _our_logits(model, attn, ids, embeds, chunk_ends)
    torch.testing.assert_close(chunked, expected, atol=1e-4, rtol=1e-4)


def test_vision_tower_with_padded_tiles_matches_transformers(vlm_dir, hf_vlm):
    """Tiles whose real pixels cover only part of them: NaViT positions, masked keys."""
    hf_model, _ = hf_vlm
    model, _ = _paged(vlm_dir)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    pixel_mask = torch.ones(2, 32, 32, dtype=torch.bool)
    pixel_mask[1, 24:, :] = False  # 3 of 4 patch rows real
    pixel_mask[1, :, 16:] = False  # 2 of 4 patch columns real
    patch_mask = model.vision_model.patch_mask(pixel_mask)
    assert patch_mask[1].sum() == 6
    with torch.no_grad():
        expected = hf_model.model.vision_model(
            pixel_values=pixels, patch_attention_mask=patch_mask).last_hidden_state
        ours = model.vision_model(pixels, pixel_mask)
    real = patch_mask.reshape(2, -1)
    torch.testing.assert_close(ours[real], expected[real], atol=1e-5, rtol=1e-5)


def test_preprocessing_and_prompt_expansion_match_the_processor(vlm_dir, hf_vlm):
    _, processor = hf_vlm
    images = ImagePrompts.for_model(vlm_dir)
    image = random_image(70, 40, seed=3)
    text, (ours,) = images.expand(PROMPT, [image])
    inputs = processor(images=[image], text=[PROMPT], return_tensors="np")
    assert processor.tokenizer.encode(text, add_special_tokens=False) == \
        inputs["input_ids"][0].tolist()
    assert (ours.pixel_values == inputs["pixel_values"][0]).all()
    assert ours.num_embeddings == inputs["input_ids"][0].tolist().count(images.image_token_id)


@pytest.fixture(scope="module")
def vlm_runtime(vlm_dir):
    """The real runtime; prefill chunks of 16 tokens, so an image spans several."""
    return build_vlm_runtime(vlm_dir, ["scheduler.max_num_batched_tokens=16"])


def _run(core, request_id: str, ids: list[int], multimodal, params: SamplingParams):
    """Run one request to the end on the engine core -> (tokens, prompt logprobs)."""
    core.add_request(request_id, ids, params, multimodal=multimodal)
    tokens, prompt_logprobs = [], None
    while core.has_unfinished:
        for output in core.step():
            assert output.error is None, output.error
            tokens.extend(output.new_token_ids)
            if output.prompt_logprobs is not None:
                prompt_logprobs = output.prompt_logprobs
    return tokens, prompt_logprobs


def _request_inputs(runtime, image, text: str = PROMPT):
    images = runtime.tokenizer.images
    expanded, inputs = images.expand(text, [image])
    ids = runtime.tokenizer.encode(expanded, add_special_tokens=False)
    return ids, images.bind(inputs, ids)


def test_engine_matches_transformers_with_chunked_prefill(vlm_runtime, hf_vlm):
    hf_model, processor = hf_vlm
    image = random_image(70, 40, seed=5)
    ids, multimodal = _request_inputs(vlm_runtime, image)
    inputs = _hf_inputs(processor, image)
    assert ids == inputs["input_ids"][0].tolist()
    core = vlm_runtime.core
    encoded_before = core.runner.images.num_encoded
    params = SamplingParams(temperature=0.0, max_tokens=6, prompt_logprobs=0,
                            ignore_eos=True)
    tokens, prompt_logprobs = _run(core, "vlm-0", ids, multimodal, params)
    assert core.runner.images.num_encoded == encoded_before + 1  # once, across chunks
    assert core.num_request_states()["image_embeddings"] == 0
    with torch.no_grad():
        generated = hf_model.generate(**inputs, max_new_tokens=6, do_sample=False,
                                      min_new_tokens=6)
    assert tokens == generated[0, len(ids):].tolist()
    expected = torch.log_softmax(_hf_logits(hf_model, inputs), dim=-1)
    assert prompt_logprobs[0] is None and None not in prompt_logprobs[1:]
    ours = torch.tensor([entry.logprob for entry in prompt_logprobs[1:]])
    reference = expected[:-1].gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)


def test_prefix_cache_is_keyed_by_the_image(vlm_runtime):
    core = vlm_runtime.core
    cache = core.scheduler.page_manager.prefix_cache
    params = SamplingParams(temperature=0.0, max_tokens=3, ignore_eos=True)
    image = random_image(70, 40, seed=11)
    ids, multimodal = _request_inputs(vlm_runtime, image)
    first, _ = _run(core, "cache-a", ids, multimodal, params)
    hits = cache.num_hit_tokens
    again, _ = _run(core, "cache-b", ids, multimodal, params)
    assert again == first
    assert cache.num_hit_tokens - hits >= len(ids) - PAGE_SIZE - 1  # all but the tail
    other_ids, other = _request_inputs(vlm_runtime, random_image(70, 40, seed=12))
    assert other_ids == ids  # same tokens, another image
    hits = cache.num_hit_tokens
    _run(core, "cache-c", other_ids, other, params)
    first_image_token = ids.index(vlm_runtime.tokenizer.images.image_token_id)
    assert cache.num_hit_tokens - hits <= first_image_token  # only the text before it


def test_text_model_refuses_images(vlm_runtime):
    ids, multimodal = _request_inputs(vlm_runtime, random_image(40, 40))
    runner = vlm_runtime.core.runner
    images, runner.images = runner.images, None
    try:
        with pytest.raises(ValueError, match="does not accept images"):
            vlm_runtime.core.add_request("text-only", ids, SamplingParams(),
                                         multimodal=multimodal)
    finally:
        runner.images = images
