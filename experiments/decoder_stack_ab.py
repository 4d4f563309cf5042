"""The native decoder stack against the Python layer loop, in one runtime, interleaved.

    python experiments/decoder_stack_ab.py                        # quant=q4_1, 1 4 8 streams
    python experiments/decoder_stack_ab.py --streams 1 --rounds 5 -- quant=awq_model...

One runtime is built (default ``quant=q4_1``, whose decode steps the stack runs); each
round runs every stream count twice, once with the model's decoder stack
(toolkit/models/native_decoder.py) and once with it switched off, which sends every step
through LlamaDecoderLayer.forward. Prints the median decode tok/s of each, their ratio,
and whether the greedy outputs of the two were identical token for token (they must be:
the stack runs the same kernels in the same order).
"""

from __future__ import annotations

import argparse
import statistics

from decode_throughput import prompts, run

from toolkit.compose import compose_config
from toolkit.runtime import build_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", default=["quant=q4_1"])
    args = parser.parse_args()
    runtime = build_runtime(compose_config(args.overrides))
    model = runtime.core.runner.model
    prompt_ids = prompts(runtime, max(args.streams))
    run(runtime.core, prompt_ids, 1, 8)  # warm-up; builds the stack
    stack = model.decoder_stack
    if stack is None:
        raise SystemExit(f"no decoder stack for {args.overrides}: nothing to compare")
    print(f"prompt tokens: {len(prompt_ids[0])}, output tokens per stream: "
          f"{args.output_len}, {args.rounds} rounds, interleaved")
    print(f"{'streams':>7} {'stack tok/s':>12} {'loop tok/s':>11} {'stack/loop':>11} "
          f"{'same outputs':>13}")
    for num_streams in args.streams:
        rows: dict[str, list[dict]] = {"stack": [], "loop": []}
        for _ in range(args.rounds):
            for name in rows:
                model.decoder_stack = stack if name == "stack" else None
                rows[name].append(run(runtime.core, prompt_ids, num_streams, args.output_len))
        model.decoder_stack = stack
        stacked, looped = (statistics.median(r["decode_tokens_per_s"] for r in rows[name])
                           for name in ("stack", "loop"))
        same = all(r["outputs"] == rows["loop"][0]["outputs"]
                   for r in rows["stack"] + rows["loop"])
        print(f"{num_streams:>7} {stacked:>12.1f} {looped:>11.1f} {stacked / looped:>11.2f} "
              f"{same!s:>13}")


if __name__ == "__main__":
    main()
