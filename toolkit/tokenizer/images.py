"""Images -> model inputs for Idefics3 / SmolVLM: preprocessing through the model's own
transformers image processor (resize, split into tiles, normalize) and the expansion of
each ``<image>`` placeholder of a rendered prompt into the token sequence the model's
processor writes (``<fake_token_around_image>``, ``<row_r_col_c>`` / ``<global-img>``,
``image_seq_len`` ``<image>`` tokens per tile).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.protocol.multimodal import ImageInput, MultiModalInput

IMAGE_TOKEN = "<image>"
"""The placeholder a chat template writes for an image part (and the token that stands
for one image embedding)."""
_FAKE_TOKEN = "<fake_token_around_image>"
_GLOBAL_TOKEN = "<global-img>"
_ARCHITECTURES = ("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration")


class ImagePrompts:
    """One vision-language model's image preprocessing and prompt expansion."""

    def __init__(self, model_dir: str | Path, image_token_id: int, image_seq_len: int) -> None:
        from transformers import AutoImageProcessor

        self.processor = AutoImageProcessor.from_pretrained(str(model_dir))
        self.image_token_id = image_token_id
        self.image_seq_len = image_seq_len
        """``<image>`` tokens (= embeddings) per tile."""

    @classmethod
    def for_model(cls, model_dir: str | Path) -> ImagePrompts | None:
        """The model's image handling, or None for a model that takes no images."""
        model_dir = Path(model_dir)
        config = _read_json(model_dir / "config.json")
        if (config.get("architectures") or [""])[0] not in _ARCHITECTURES:
            return None
        vision = config.get("vision_config", {})
        side = vision.get("image_size", 224) // vision.get("patch_size", 32)
        default_len = side * side // config.get("scale_factor", 2) ** 2
        processor = _read_json(model_dir / "processor_config.json")
        return cls(model_dir, int(config["image_token_id"]),
                   int(processor.get("image_seq_len", default_len)))

    def preprocess(self, images: list[Any]) -> list[tuple[ImageInput, int, int]]:
        """PIL images -> (ImageInput, rows, cols) each; rows = cols = 0: not split. Each
        image is processed on its own, so its pixels (and hash) never depend on the
        other images of the request."""
        results = []
        for image in images:
            out = self.processor(images=[[image]], return_tensors="np",
                                 return_row_col_info=True)
            rows, cols = int(out["rows"][0][0]), int(out["cols"][0][0])
            num_tiles = rows * cols + 1
            pixels = np.ascontiguousarray(out["pixel_values"][0][:num_tiles], dtype=np.float32)
            mask = np.ascontiguousarray(out["pixel_attention_mask"][0][:num_tiles], dtype=bool)
            digest = hashlib.sha256(pixels.tobytes())
            digest.update(mask.tobytes())
            image = ImageInput(digest.digest(), pixels, mask, num_tiles * self.image_seq_len)
            results.append((image, rows, cols))
        return results

    def image_text(self, rows: int, cols: int) -> str:
        """The text one ``<image>`` placeholder becomes (the Idefics3 processor's)."""
        tile = IMAGE_TOKEN * self.image_seq_len
        global_image = f"{_FAKE_TOKEN}{_GLOBAL_TOKEN}{tile}{_FAKE_TOKEN}"
        if rows == 0 and cols == 0:
            return global_image
        grid = "".join("".join(f"{_FAKE_TOKEN}<row_{r + 1}_col_{c + 1}>{tile}"
                               for c in range(cols)) + "\n" for r in range(rows))
        return f"{grid}\n{global_image}"

    def expand(self, text: str, images: list[Any]) -> tuple[str, tuple[ImageInput, ...]]:
        """Preprocess ``images`` and replace the n-th ``<image>`` of ``text`` by the n-th
        image's tokens; ValueError when the counts differ."""
        pieces = text.split(IMAGE_TOKEN)
        if len(pieces) - 1 != len(images):
            raise ValueError(f"the chat template placed {len(pieces) - 1} {IMAGE_TOKEN} "
                             f"placeholder(s) for {len(images)} image(s)")
        processed = self.preprocess(images)
        out = [pieces[0]]
        for (_, rows, cols), piece in zip(processed, pieces[1:]):
            out += [self.image_text(rows, cols), piece]
        return "".join(out), tuple(image for image, _, _ in processed)

    def bind(self, images: tuple[ImageInput, ...], prompt_token_ids: list[int]) -> MultiModalInput:
        """The images placed at the prompt's ``<image>`` tokens (ValueError on a count
        mismatch, e.g. an ``<image>`` typed in the text)."""
        return MultiModalInput.bind(images, prompt_token_ids, self.image_token_id)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}
