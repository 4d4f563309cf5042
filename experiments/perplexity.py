"""Perplexity of weight / KV-cache quantization variants on held-out text.

    python experiments/perplexity.py --awq DIR                   # DIR from `toolkit quantize`
    python experiments/perplexity.py --awq DIR --rtn DIR2 --group-size 64 --max-tokens 8192
    python experiments/perplexity.py --variants bf16 fp8 -- device.num_threads=1

The text is the evaluation split of toolkit/quant/calibration.py (never calibrated on),
tokenized once with the source model's tokenizer and cut into --seq-len blocks; every
variant scores the same tokens. Each variant is a composed config loaded through the real
loader into the in-process engine (paged KV, the configured attention backend) and scored
with prompt_logprobs, so it measures exactly what `toolkit serve` would run:

    bf16    dense weights, model.dtype=bfloat16
    rtn     4-bit round-to-nearest AWQ checkpoint (--rtn DIR, else written now with
            toolkit.quant.rtn into a temporary directory at --group-size)
    awq     4-bit AWQ checkpoint from `toolkit quantize` (--awq DIR)
    fp8     quant=fp8 (weight-only e4m3, made at load time)
    q4_1    quant=q4_1 (llama.cpp's Q4_1 blocks, requantized at load time)
    q4_1_decode  quant=q4_1 with every token on its decode-step routes: the int4 kernel
            for the projections and the int8 LM head (toolkit/quant/int8_lm_head.py)
    fp8_kv  cache.dtype=fp8_e4m3 (bf16 weights, fp8 KV cache)
    w8a8    quant=w8a8 (int8 per-channel weights, int8 per-token activations, made at
            load time)
    w8a8_head  quant=w8a8 quant.int8_lm_head=true (the LM head int8 too)

A variant that cannot be built yet (a missing checkpoint or a feature not in the toolkit)
is skipped with a printed note, so the script can simply be rerun later.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import tempfile
import time

from toolkit.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.quant.calibration import token_blocks
from toolkit.runtime import build_runtime

VARIANTS = ("bf16", "rtn", "awq", "fp8", "fp8_kv", "q4_1", "q4_1_decode", "w8a8",
            "w8a8_head")
ENGINE = ["device=cpu", "model.dtype=bfloat16", "cache.enable_prefix_caching=false"]


def variant_overrides(name: str, args: argparse.Namespace, scratch: pathlib.Path,
                      ) -> list[str] | str:
    """The overrides of variant ``name``, or why it is skipped."""
    if name == "bf16":
        return ["quant=none"]
    if name in ("fp8", "q4_1", "w8a8"):
        return [f"quant={name}"]
    if name == "q4_1_decode":
        return ["quant=q4_1", f"quant.max_int4_tokens={1 << 20}"]
    if name == "w8a8_head":
        return ["quant=w8a8", "quant.int8_lm_head=true"]
    if name == "fp8_kv":
        return ["quant=none", "cache.dtype=fp8_e4m3"]
    if name == "awq":
        return (["quant=awq", f"model.path={args.awq}"] if args.awq
                else "no --awq DIR (make one with `toolkit quantize ... output=DIR`)")
    rtn_dir = args.rtn or _write_rtn(args, scratch)
    if isinstance(rtn_dir, str):
        return rtn_dir
    return ["quant=awq", f"model.path={rtn_dir}"]


def _write_rtn(args: argparse.Namespace, scratch: pathlib.Path) -> pathlib.Path | str:
    try:
        from toolkit.quant.rtn import write_rtn_awq_checkpoint
    except ImportError:
        return "toolkit.quant.rtn is not available yet"
    source = _source_dir(args.overrides)
    return write_rtn_awq_checkpoint(source, scratch / "rtn", args.group_size)


def _source_dir(overrides: list[str]) -> pathlib.Path:
    from toolkit.models.source import resolve_model_dir

    model = compose_config(overrides).model
    return resolve_model_dir(model.source, model.path)


def evaluation_tokens(args: argparse.Namespace) -> list[list[int]]:
    """Blocks of --seq-len tokens of held-out text, at most --max-tokens in all."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(_source_dir(args.overrides)))
    blocks = token_blocks("evaluation", lambda text: tokenizer.encode(
        text, add_special_tokens=False), args.seq_len, max(1, args.max_tokens // args.seq_len))
    return blocks.tolist()


def negative_log_likelihood(core, blocks: list[list[int]]) -> tuple[float, int]:
    """Sum of -log p(token | preceding tokens of its block) and the tokens scored."""
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
    for i, block in enumerate(blocks):
        core.add_request(f"ppl-{i}", block, params)
    total, count = 0.0, 0
    while core.has_unfinished:
        for output in core.step():
            for entry in output.prompt_logprobs or []:
                if entry is not None:
                    total -= entry.logprob
                    count += 1
    return total, count


def score(name: str, overrides: list[str], blocks: list[list[int]]) -> dict | str:
    """Build the variant's runtime and score ``blocks``; a one-line reason on failure."""
    try:
        runtime = build_runtime(compose_config([*ENGINE, *overrides]))
    except Exception as exc:  # noqa: BLE001 - report and move on to the next variant
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    started = time.perf_counter()
    total, count = negative_log_likelihood(runtime.core, blocks)
    expected = sum(len(b) - 1 for b in blocks)
    if count != expected:
        return f"scored {count} tokens, expected {expected}"
    return {"variant": name, "perplexity": math.exp(total / count), "tokens": count,
            "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--awq", type=pathlib.Path, help="AWQ checkpoint directory")
    parser.add_argument("--rtn", type=pathlib.Path, help="RTN checkpoint directory")
    parser.add_argument("--group-size", type=int, default=64,
                        help="group size of the RTN checkpoint written when --rtn is absent")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("overrides", nargs="*", help="overrides applied to every variant")
    args = parser.parse_args()
    blocks = evaluation_tokens(args)
    print(f"held-out text: {len(blocks)} blocks x {args.seq_len} tokens")
    print("| variant | perplexity | tokens | seconds |\n|---|---|---|---|", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.variants:
            overrides = variant_overrides(name, args, pathlib.Path(scratch))
            result = (score(name, [*overrides, *args.overrides], blocks)
                      if isinstance(overrides, list) else overrides)
            if isinstance(result, str):
                print(f"| {name} | skipped: {result} | | |", flush=True)
                continue
            print(f"| {name} | {result['perplexity']:.3f} | {result['tokens']} | "
                  f"{result['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
