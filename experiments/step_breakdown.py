"""Where a decode step's time goes, at N streams, through the in-process engine.

    python experiments/step_breakdown.py --streams 1 16 64                  # the defaults (bf16)
    python experiments/step_breakdown.py --streams 1 -- quant=q4_1

For each stream count: N requests, each with its own ~200-token prompt (decode_throughput.py's)
are prefilled, then --steps decode steps run once plainly (the step time printed) and once
under cProfile, whose self times are grouped by what the function is: the matmuls (the
projections' and the LM head's), attention, the other model kernels, sampling, the
scheduler and output processing, and everything else (Python between the ops). cProfile adds its own cost
to the Python share, so read the shares, and the plain step time for the total.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from decode_throughput import prompts

from toolkit.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.runtime import build_runtime

GROUPS = (
    ("matmuls", ("_linear_pointwise", "_int_mm", "_weight_int4pack_mm",
                            "quantize_rows", "dequantize_rows", "lora_bgmv", "addmm", "linear")),
    ("attention", ("decode_attention", "store_kv", "scaled_dot_product_attention")),
    ("norms, rotary, silu", ("rms_norm", "rotary", "silu_and_mul")),
    ("sampling", ("sampler.py", "logits_processors.py", "argmax", "logprobs.py")),
    ("scheduler and outputs", ("scheduler.py", "output_processor.py", "core.py",
                               "batch_builder.py", "detokenizer.py")),
)
"""(group, substrings of cProfile's "file:line(function)" keys), first match wins."""


def group_of(key: tuple[str, int, str]) -> str:
    name = f"{key[0]}:{key[1]}({key[2]})"
    for group, needles in GROUPS:
        if any(needle in name for needle in needles):
            return group
    return "other Python"


def breakdown(core, prompts: list[list[int]], num_streams: int, num_steps: int) -> None:
    params = SamplingParams(max_tokens=num_steps * 2 + 16, temperature=0.0, ignore_eos=True)
    for i in range(num_streams):
        core.add_request(f"s{num_streams}-{i}", prompts[i], params)
    while core.scheduler.waiting or any(
            r.num_computed_tokens < len(r.prompt_token_ids) for r in core.scheduler.running):
        core.step()
    start = time.perf_counter()
    for _ in range(num_steps):
        core.step()
    step_s = (time.perf_counter() - start) / num_steps
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(num_steps):
        core.step()
    profile.disable()
    totals: dict[str, float] = {}
    for key, (_, _, self_s, _, _) in pstats.Stats(profile).stats.items():
        totals[group_of(key)] = totals.get(group_of(key), 0.0) + self_s
    profiled = sum(totals.values())
    print(f"\n{num_streams} streams: {step_s * 1e3:.1f} ms a step ({num_streams / step_s:.0f} "
          f"tok/s); under cProfile {profiled / num_steps * 1e3:.1f} ms")
    for group, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"  {group:>24} {seconds / num_steps * 1e3:7.2f} ms  {seconds / profiled:6.1%}")
    while core.has_unfinished:  # finish the streams before the next count
        for request_id in [r.request_id for r in core.scheduler.running]:
            core.abort_request(request_id)
        core.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. quant=q4_1")
    args = parser.parse_args()
    runtime = build_runtime(compose_config(args.overrides))
    prompt_ids = prompts(runtime, max(args.streams))
    for num_streams in args.streams:
        breakdown(runtime.core, prompt_ids, num_streams, args.steps)


if __name__ == "__main__":
    main()
