"""Single-stream decode speed with speculative decoding against none, side by side.

    python experiments/spec_decode.py                                  # SmolLM2 bf16, ngram k=4
    python experiments/spec_decode.py --output-len 96 -- speculative.num_speculative_tokens=6

One runtime is built with the speculative overrides (speculative=ngram by default) and a
second engine core without speculation is wired around the same loaded model, so the two
differ only in speculation. Input-grounded tasks (rewrite, quote, summarise with quotes)
run one request at a time, alternating between the two cores, --rounds times; each row
gives the median decode rate (output tokens after the first / time after the first), the
speedup, the acceptance rate and mean accepted length (tokens per verification, bonus
included), and whether every greedy output equals the first plain one.

Prefix caching is off (a cached prefill computes different rounding than a full one).
NOTE: in float32 the outputs are identical; in bfloat16 a verification forward (1 + k
query rows) rounds differently from a one-token decode, so near-tied greedy choices can
flip and the texts may diverge after a while (vLLM documents the same).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

from toolkit.compose import compose_config
from toolkit.protocol import SamplingParams
from toolkit.runtime import build_runtime, rebuild_engine

PASSAGES = (
    ("The lighthouse keeper climbed the spiral stairs every evening at dusk, carrying a brass "
     "lantern and a small notebook. He wrote down the colour of the sky, the direction of the "
     "wind and the names of the ships that passed, and in thirty years he never missed a "
     "night."),
    ("Bees communicate the location of flowers through a waggle dance. The angle of the dance "
     "relative to the vertical shows the direction of the food relative to the sun, and the "
     "length of the waggle run shows how far away it is."),
)
TASKS = (
    'Rewrite the following passage, keeping its sentences as they are: "{p}"',
    'Quote the following passage word for word, then say in one sentence what it is about: "{p}"',
    'Summarise the following passage, quoting its most important sentence exactly: "{p}"',
)
_ids = iter(range(1 << 30))


def generate(core, prompt_ids: list[int], output_len: int) -> dict:
    """One greedy request alone; its decode rate and the engine's acceptance counters."""
    before = replace(core.metrics)
    request_id = f"spec-bench-{next(_ids)}"
    core.add_request(request_id, prompt_ids, SamplingParams(max_tokens=output_len,
                                                            temperature=0.0))
    first_at, tokens = None, []
    while core.has_unfinished:
        for output in core.step():
            if first_at is None and output.new_token_ids:
                first_at = time.perf_counter()
            tokens += output.new_token_ids
    decode_s = time.perf_counter() - first_at
    after = core.metrics
    return {"tokens": tokens, "decode_tps": (len(tokens) - 1) / decode_s,
            "drafts": after.num_draft_tokens - before.num_draft_tokens,
            "accepted": after.num_accepted_tokens - before.num_accepted_tokens,
            "verifications": after.num_verifications - before.num_verifications}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("overrides", nargs="*",
                        help="config overrides for the speculative runtime")
    args = parser.parse_args()
    overrides = ["speculative=ngram", "cache.enable_prefix_caching=false", *args.overrides]
    spec_runtime = build_runtime(compose_config(overrides))
    cfg = spec_runtime.config
    plain_core = rebuild_engine(spec_runtime, replace(cfg, speculative=replace(
        cfg.speculative, method="none"))).core
    spec_core = spec_runtime.core
    tokenizer = spec_runtime.tokenizer
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": t.format(p=p)}])
               for p in PASSAGES for t in TASKS]
    generate(plain_core, prompts[0], 8)  # warm-up
    generate(spec_core, prompts[0], 8)
    print(f"speculative: {cfg.speculative.method}, k={cfg.speculative.num_speculative_tokens}, "
          f"{args.rounds} rounds, output <= {args.output_len} tokens, single stream")
    print(f"{'task':>4} {'tokens':>6} {'none tok/s':>10} {'spec tok/s':>10} {'speedup':>7} "
          f"{'accept':>6} {'mean len':>8} {'same':>5}")
    totals = {"none": [], "spec": [], "drafts": 0, "accepted": 0, "verifications": 0}
    for i, prompt_ids in enumerate(prompts):
        plain_rows, spec_rows = [], []
        for _ in range(args.rounds):
            plain_rows.append(generate(plain_core, prompt_ids, args.output_len))
            spec_rows.append(generate(spec_core, prompt_ids, args.output_len))
        plain_tps = statistics.median(r["decode_tps"] for r in plain_rows)
        spec_tps = statistics.median(r["decode_tps"] for r in spec_rows)
        drafts = sum(r["drafts"] for r in spec_rows)
        accepted = sum(r["accepted"] for r in spec_rows)
        verifications = sum(r["verifications"] for r in spec_rows)
        same = all(r["tokens"] == plain_rows[0]["tokens"] for r in plain_rows + spec_rows)
        totals["none"].append(plain_tps)
        totals["spec"].append(spec_tps)
        for key, value in (("drafts", drafts), ("accepted", accepted),
                           ("verifications", verifications)):
            totals[key] += value
        print(f"{i:>4} {len(plain_rows[0]['tokens']):>6} {plain_tps:>10.1f} {spec_tps:>10.1f} "
              f"{spec_tps / plain_tps:>7.2f} {accepted / max(drafts, 1):>6.2f} "
              f"{1 + accepted / max(verifications, 1):>8.2f} {same!s:>5}")
    none_tps, spec_tps = statistics.mean(totals["none"]), statistics.mean(totals["spec"])
    print(f"mean decode tok/s: none {none_tps:.1f}, speculative {spec_tps:.1f}, "
          f"speedup {spec_tps / none_tps:.2f}x; acceptance rate "
          f"{totals['accepted'] / max(totals['drafts'], 1):.2f}, mean accepted length "
          f"{1 + totals['accepted'] / max(totals['verifications'], 1):.2f}")


if __name__ == "__main__":
    main()
