"""Aggregate decode throughput at 1 and N concurrent streams, side by side in one run.

    python bench/decode_throughput.py                       # SmolLM2, bf16, 1 vs 16 streams
    python bench/decode_throughput.py --streams 1 16 64 -- model.dtype=float32

Drives the in-process EngineCore (no HTTP): every stream gets the same ~200-token prompt
and generates exactly --output-len tokens (ignore_eos). Prints one row per concurrency and
the ratio of each aggregate rate to the single-stream rate.
"""

from __future__ import annotations

import argparse
import time

from toolkit.cli.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.runtime import build_runtime

PASSAGE = (
    "The sea is a vast body of salt water that covers most of the Earth's surface. "
    "Its tides follow the moon, its currents carry heat from the equator to the poles, "
    "and its waves are raised by winds that blow across thousands of kilometres. "
)


def run(core, prompt_ids: list[int], num_streams: int, output_len: int) -> dict:
    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)
    for i in range(num_streams):
        core.add_request(f"bench-{num_streams}-{i}", prompt_ids, params)
    start = time.perf_counter()
    first_token_at = None
    num_tokens = 0
    while core.has_unfinished:
        outputs = core.step()
        if outputs and first_token_at is None:
            first_token_at = time.perf_counter()
        num_tokens += sum(len(o.new_token_ids) for o in outputs)
    elapsed = time.perf_counter() - start
    decode_time = elapsed - (first_token_at - start)
    return {"streams": num_streams, "tokens": num_tokens, "seconds": elapsed,
            "tokens_per_s": num_tokens / elapsed,
            "decode_tokens_per_s": (num_tokens - num_streams) / decode_time}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.dtype=float32")
    args = parser.parse_args()
    runtime = build_runtime(compose_config(args.overrides))
    prompt_ids = runtime.tokenizer.apply_chat_template(
        [{"role": "user", "content": PASSAGE * 3 + "Summarise this in one paragraph."}])
    run(runtime.core, prompt_ids, 2, 8)  # warm-up
    print(f"prompt tokens: {len(prompt_ids)}, output tokens per stream: {args.output_len}")
    print(f"{'streams':>7} {'tokens':>7} {'seconds':>8} {'tok/s':>8} {'decode tok/s':>13} {'x single':>9}")
    single = None
    for num_streams in args.streams:
        row = run(runtime.core, prompt_ids, num_streams, args.output_len)
        single = single or row["tokens_per_s"]
        print(f"{row['streams']:>7} {row['tokens']:>7} {row['seconds']:>8.2f} "
              f"{row['tokens_per_s']:>8.1f} {row['decode_tokens_per_s']:>13.1f} "
              f"{row['tokens_per_s'] / single:>9.2f}")


if __name__ == "__main__":
    main()
