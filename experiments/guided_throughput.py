"""Guided decoding cost: a batch with guided requests against the same batch unguided,
and the first-request grammar compile time.

    python experiments/guided_throughput.py                        # 16 streams, 8 guided, 64 tokens
    python experiments/guided_throughput.py --streams 32 --guided 16 -- model.dtype=float32

Drives the in-process EngineCore. Every stream gets the same prompt and generates exactly
--output-len tokens: the guided ones under a JSON schema (an array of at least 200 short
strings) that cannot complete within that budget, so both batches do the same number of
steps. Rounds alternate between the two batches; medians are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from toolkit.compose import compose_config
from toolkit.protocol import GuidedSpec, SamplingParams
from toolkit.runtime import build_runtime

SCHEMA = {"type": "array", "minItems": 200,
          "items": {"type": "object", "properties": {"word": {"type": "string",
                                                              "maxLength": 12},
                                                     "n": {"type": "integer"}},
                    "required": ["word", "n"]}}
"""Long instances: the grammar stays open for the whole output budget."""

FIRST_SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
    "tags": {"type": "array", "items": {"type": "string"}},
    "address": {"type": "object", "properties": {"city": {"type": "string"},
                                                 "zip": {"type": "string",
                                                         "pattern": "^[0-9]{5}$"}}}},
    "required": ["name", "age"]}
"""The schema whose cold compile time is reported."""

_run_ids = iter(range(1 << 30))


def run(core, prompt_ids: list[int], streams: int, guided: int, output_len: int) -> float:
    """Aggregate tokens/s of one batch: ``guided`` of ``streams`` requests are guided."""
    spec = GuidedSpec("json", json.dumps(SCHEMA))
    run_id = next(_run_ids)
    for i in range(streams):
        params = SamplingParams(max_tokens=output_len, temperature=1.0, seed=i,
                                ignore_eos=True, guided=spec if i < guided else None)
        core.add_request(f"bench-{run_id}-{i}", prompt_ids, params)
    start, tokens = time.perf_counter(), 0
    while core.has_unfinished:
        tokens += sum(len(o.new_token_ids) for o in core.step())
    assert tokens == streams * output_len, "a guided request ended early"
    return tokens / (time.perf_counter() - start)


def cold_compile_ms(runtime) -> tuple[float, float]:
    """(TokenizerInfo + compiler set-up, first compile) in ms, with a fresh compiler."""
    from toolkit.guided.compiler import GuidedCompiler

    start = time.perf_counter()
    compiler = GuidedCompiler(runtime.tokenizer.hf, runtime.core.guided.vocab_size,
                              runtime.resolved.eos_token_ids)
    setup = time.perf_counter()
    compiler.compile(GuidedSpec("json", json.dumps(FIRST_SCHEMA)))
    done = time.perf_counter()
    return (setup - start) * 1e3, (done - setup) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--guided", type=int, default=8)
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="config overrides (KEY=VALUE)")
    args = parser.parse_args()
    runtime = build_runtime(compose_config(args.overrides))
    setup_ms, compile_ms = cold_compile_ms(runtime)
    prompt_ids = runtime.tokenizer.apply_chat_template(
        [{"role": "user", "content": "List some words with numbers as JSON."}])
    run(runtime.core, prompt_ids, 2, 1, 8)
    plain, guided = [], []
    for _ in range(args.rounds):
        plain.append(run(runtime.core, prompt_ids, args.streams, 0, args.output_len))
        guided.append(run(runtime.core, prompt_ids, args.streams, args.guided,
                          args.output_len))
    print(f"tokenizer info + compiler set-up: {setup_ms:.0f} ms; first compile of a "
          f"nested schema: {compile_ms:.1f} ms")
    print(f"{args.streams} streams x {args.output_len} tokens, {args.rounds} rounds "
          f"(median tok/s): unguided {statistics.median(plain):.1f}, "
          f"{args.guided} guided {statistics.median(guided):.1f}, ratio "
          f"{statistics.median(guided) / statistics.median(plain):.3f}")


if __name__ == "__main__":
    main()
