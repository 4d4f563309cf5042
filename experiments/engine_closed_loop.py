"""The bench's closed loop on the in-process engine, without HTTP: --concurrency requests in
flight, each finished one replaced at once, 2x --concurrency requests of ~200 prompt
tokens and --output-len tokens out (greedy, ignore_eos). Prints the output tokens/s and the
time in steps with prefill tokens against decode-only steps.

    python experiments/engine_closed_loop.py --concurrency 64 -- quant=w8a8
    python experiments/engine_closed_loop.py --concurrency 16 -- recipe=cpu-throughput

Set beside `toolkit bench` on a server of the same config, the difference is what HTTP, the
event loop and the client cost the engine (docs/performance.md, session 14).
"""

from __future__ import annotations

import argparse
import time

from decode_throughput import prompts

from toolkit.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.runtime import build_runtime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("overrides", nargs="*", help="config overrides (after --)")
    args = parser.parse_args()
    runtime = build_runtime(compose_config(args.overrides))
    core = runtime.core
    num_requests = 2 * args.concurrency
    texts = prompts(runtime, num_requests + 1)
    core.add_request("warm-up", texts[-1], SamplingParams(max_tokens=8, temperature=0.0))
    while core.has_unfinished:
        core.step()
    seconds = {"prefill": 0.0, "decode": 0.0}
    steps = {"prefill": 0, "decode": 0}
    execute = core._execute

    def timed(scheduler_output):
        started = time.perf_counter()
        output = execute(scheduler_output)
        kind = "prefill" if any(s.num_tokens > 1 for s in scheduler_output.scheduled) else "decode"
        seconds[kind] += time.perf_counter() - started
        steps[kind] += 1
        return output

    core._execute = timed
    params = SamplingParams(max_tokens=args.output_len, temperature=0.0, ignore_eos=True)
    sent = done = num_tokens = 0
    started = time.perf_counter()
    while done < num_requests:
        while sent < num_requests and sent - done < args.concurrency:
            core.add_request(f"r{sent}", texts[sent], params)
            sent += 1
        for output in core.step():
            num_tokens += len(output.new_token_ids)
            done += output.finished
    elapsed = time.perf_counter() - started
    print(f"{args.concurrency} streams, {num_requests} requests: {elapsed:.2f} s, "
          f"{num_tokens / elapsed:.1f} output tok/s")
    for kind in ("prefill", "decode"):
        print(f"  steps with {kind}: {steps[kind]}, {seconds[kind]:.2f} s")


if __name__ == "__main__":
    main()
