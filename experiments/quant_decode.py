"""Decode tokens/s of bf16 vs AWQ (a round-to-nearest checkpoint) vs fp8 vs q4_1, side by side.

    python experiments/quant_decode.py                         # SmolLM2, 1 and 16 streams
    python experiments/quant_decode.py --group-size 32 --streams 1 4 16 --rounds 3
    python experiments/quant_decode.py --variants bf16 q4_1 --streams 16 --rounds 3

The AWQ variant serves a round-to-nearest AWQ checkpoint made once from the same model
(toolkit.quant.rtn, cached under $TOOLKIT_CACHE_DIR); fp8 quantizes the bf16 checkpoint
at load time, q4_1 requantizes it to llama.cpp's Q4_1 blocks. The variants run
alternately, --rounds times per concurrency, so that noise on a shared machine hits them
alike; each row shows the median rate, the best, the ratio to bf16, and the resident
bytes of the decoder projections (the quantized part of the model; bf16's include the
oneDNN-packed copy) as MiB and as a fraction of their plain bf16 weight bytes.
"""

from __future__ import annotations

import argparse
import functools
import pathlib

from decode_throughput import interleaved_rounds, prompts, rates, run

from toolkit.compose import compose_config
from toolkit.models.source import cache_root, resolve_model_dir
from toolkit.quant.rtn import write_rtn_awq_checkpoint
from toolkit.runtime import build_runtime


def rtn_checkpoint(overrides: list[str], group_size: int) -> pathlib.Path:
    """The RTN AWQ twin of the configured model, written on first use."""
    cfg = compose_config(overrides)
    src = resolve_model_dir(cfg.model.source, cfg.model.path)
    out = cache_root() / "quant" / f"{src.name}-rtn-awq-g{group_size}"
    if not (out / "config.json").is_file():
        write_rtn_awq_checkpoint(src, out, group_size)
    return out


def projection_bytes(runtime) -> tuple[int, int]:
    """(bytes the decoder projections keep after after_load, their bf16 weight bytes)."""
    from toolkit.quant.linear import QuantLinear

    layers = [m for m in runtime.core.runner.model.modules() if isinstance(m, QuantLinear)]
    return (sum(m.method.resident_bytes(m) for m in layers),
            sum(2 * m.in_features * m.out_features for m in layers))


VARIANTS = ("bf16", "awq", "fp8", "q4_1")


def variants(names: list[str], overrides: list[str], group_size: int) -> dict[str, list[str]]:
    """Variant name -> its overrides on top of ``overrides`` (bf16 always comes first)."""
    out = {"bf16": ["quant=none"]}
    if "awq" in names:
        out[f"awq-rtn-g{group_size}"] = [
            f"model.path={rtn_checkpoint(overrides, group_size)}", "quant=awq"]
    out.update({name: [f"quant.method={name}"] for name in ("fp8", "q4_1") if name in names})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--group-size", type=int, default=64,
                        help="AWQ group size (SmolLM2's 576-wide layers take 32 or 64)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("overrides", nargs="*", help="config overrides for every variant")
    args = parser.parse_args()
    runtimes = {name: build_runtime(compose_config(args.overrides + extra))
                for name, extra in variants(args.variants, args.overrides,
                                                args.group_size).items()}
    prompt_ids = prompts(runtimes["bf16"], max(args.streams))
    for runtime in runtimes.values():
        run(runtime.core, prompt_ids, 2, 8)  # warm-up
    sizes = {name: projection_bytes(rt) for name, rt in runtimes.items()}
    print(f"prompt tokens: {len(prompt_ids[0])}, output tokens per stream: {args.output_len}, "
          f"{args.rounds} rounds, variants interleaved")
    print(f"{'streams':>7} {'variant':>14} {'tok/s':>8} {'best':>8} {'decode tok/s':>13} "
          f"{'x bf16':>7} {'proj MiB':>9} {'x bf16 weights':>14}")
    for num_streams in args.streams:
        rows = interleaved_rounds({
            name: functools.partial(run, runtime.core, prompt_ids, num_streams, args.output_len)
            for name, runtime in runtimes.items()}, args.rounds)
        base = rates(rows["bf16"])[0]
        for name, name_rows in rows.items():
            rate, best, decode = rates(name_rows)
            print(f"{num_streams:>7} {name:>14} {rate:>8.1f} {best:>8.1f} {decode:>13.1f} "
                  f"{rate / base:>7.2f} {sizes[name][0] / 2**20:>9.1f} "
                  f"{sizes[name][0] / sizes[name][1]:>14.2f}")


if __name__ == "__main__":
    main()
