"""Decode throughput with the native CPU kernels vs the torch ops, side by side in one run.

    python experiments/cpu_kernels_ab.py -- quant.method=q4_1 device.num_threads=2
    python experiments/cpu_kernels_ab.py --streams 1 4 16 64 --rounds 3 -- device.num_threads=2

The route is chosen when a model is built (toolkit/kernels/route.py), so there is one
runtime per route (device.cpu_kernels=torch and =native, the same checkpoint and config
otherwise), each driving its in-process EngineCore; the routes alternate round by round, so
that machine noise hits them alike. Every stream gets the same
~200-token prompt and generates --output-len tokens (greedy, ignore_eos). Prints each
route's median rate, its best, its median decode-only rate, the ratio to the torch route,
and whether the greedy outputs equal the torch route's (they may part after many tokens:
the routes agree to float32 summation order, not bit for bit).
"""

from __future__ import annotations

import argparse
import functools

from decode_throughput import interleaved_rounds, prompts, rates, run

from toolkit.compose import compose_config
from toolkit.runtime import build_runtime

ROUTES = ("torch", "native")
"""device.cpu_kernels of each runtime; the first is the baseline."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. quant.method=q4_1")
    args = parser.parse_args()
    runtimes = {route: build_runtime(compose_config([*args.overrides,
                                                      f"device.cpu_kernels={route}"]))
                for route in ROUTES}
    prompt_ids = prompts(runtimes["native"], max(args.streams))
    for runtime in runtimes.values():
        run(runtime.core, prompt_ids, 2, 8)  # warm-up
    print(f"prompt tokens: {len(prompt_ids[0])}, output tokens per stream: {args.output_len}, "
          f"{args.rounds} rounds, routes interleaved")
    print(f"{'streams':>7} {'route':>7} {'tok/s':>8} {'best':>8} {'decode tok/s':>13} "
          f"{'x torch':>8} {'same outputs':>12}")
    def run_on(route: str, num_streams: int) -> dict:
        return run(runtimes[route].core, prompt_ids, num_streams, args.output_len)

    for num_streams in args.streams:
        rows = interleaved_rounds({route: functools.partial(run_on, route, num_streams)
                                   for route in ROUTES}, args.rounds)
        baseline = rates(rows["torch"])[0]
        for name, route_rows in rows.items():
            rate, best, decode = rates(route_rows)
            same = all(r["outputs"] == rows["torch"][0]["outputs"] for r in route_rows)
            print(f"{num_streams:>7} {name:>7} {rate:>8.1f} {best:>8.1f} {decode:>13.1f} "
                  f"{rate / baseline:>8.2f} {same!s:>12}")


if __name__ == "__main__":
    main()
