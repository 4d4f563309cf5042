"""A tiny random Idefics3 (SmolVLM's architecture) written by transformers: SigLIP tower
(32 px tiles, 8 px patches), pixel shuffle x2 (4 image tokens per tile), a 2-layer Llama,
a byte-level tokenizer with the image special tokens, the Idefics3 processor and
SmolVLM's chat template; and the images fed to it."""

from __future__ import annotations

import base64
import io
import pathlib

import numpy as np
import torch
import transformers

SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}"
    "{% endif %}"
)
"""SmolVLM-Instruct's chat template: contents are lists of text and image parts."""

IMAGE_SPECIALS = ["<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                  "<image>", "<global-img>"] + [f"<row_{r}_col_{c}>" for r in range(1, 7)
                                                 for c in range(1, 7)]


def _tokenizer() -> transformers.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer,
                                              eos_token="<end_of_utterance>")
    hf.add_special_tokens({"additional_special_tokens": IMAGE_SPECIALS})
    hf.chat_template = SMOLVLM_TEMPLATE
    return hf


def save_tiny_vlm(directory: pathlib.Path) -> transformers.Idefics3ForConditionalGeneration:
    """Write the checkpoint, tokenizer and processor into ``directory``; return the
    transformers model (float32, eval)."""
    tokenizer = _tokenizer()
    image_processor = transformers.Idefics3ImageProcessorPil(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    processor = transformers.Idefics3Processor(image_processor, tokenizer, image_seq_len=4)
    torch.manual_seed(0)
    config = transformers.Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=64,
                         intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=512,
                         rms_norm_eps=1e-5),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=2,
        eos_token_id=tokenizer.eos_token_id)
    model = transformers.Idefics3ForConditionalGeneration(config).eval()
    with torch.no_grad():  # random init leaves norms at 1 and biases at 0: perturb them
        for name, param in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model


def random_image(width: int, height: int, seed: int = 0):
    """A PIL RGB image of random pixels."""
    from PIL import Image

    pixels = np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(image) -> str:
    """``data:image/png;base64,...`` of a PIL image."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def build_vlm_runtime(directory: pathlib.Path, overrides: list[str] = ()):
    """A real Runtime serving the checkpoint in ``directory`` (float32, CPU, page size 4)."""
    from toolkit.compose import compose_config
    from toolkit.runtime import build_runtime

    return build_runtime(compose_config([
        "device=cpu", f"model.path={directory}", "model.dtype=float32", "model.name=tiny-vlm",
        "model.max_model_len=256", "cache.num_pages=256", "cache.page_size=4",
        "device.cpu_kernels=torch", *overrides]))
