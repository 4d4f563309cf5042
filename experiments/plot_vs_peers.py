"""One figure from experiments/vs_peers.sh's runs: each server's output tokens/s, p50
inter-token latency and p50 time to first token against concurrency.

    python experiments/plot_vs_peers.py OUT_DIR        # reads OUT_DIR/c*/summary.csv
    python experiments/plot_vs_peers.py OUT_DIR --label 8081='llama-cpp-python (Q4_1)'

A level run in several rounds (OUT_DIR/c16-r0, c16-r1 ...) keeps each server's round with
the most output tokens/s. Writes OUT_DIR/vs_peers.png and prints the table it plots
(markdown).
"""

from __future__ import annotations

import argparse
import csv
import pathlib

SERVERS = {"8081": "llama.cpp llama-server (Q4_1)", "8082": "vLLM CPU (bf16)",
           "8000": "toolkit (bf16)", "8002": "toolkit quant=q4_1",
           "8003": "toolkit recipe=cpu-throughput"}
"""Port in bench.target -> label (the ports vs_peers.sh starts the servers on)."""
PANELS = (("output_tokens_per_s", "output tokens/s", 1.0),
          ("itl_p50_s", "p50 inter-token latency (ms)", 1e3),
          ("ttft_p50_s", "p50 time to first token (ms)", 1e3))


def read_runs(out_dir: pathlib.Path, servers: dict[str, str]
              ) -> dict[str, dict[int, dict[str, float]]]:
    """server label -> concurrency -> the numbers of its best round at that level."""
    runs: dict[str, dict[int, dict[str, float]]] = {}
    for summary in sorted(out_dir.glob("c*/summary.csv")):
        concurrency = int(summary.parent.name[1:].split("-")[0])
        with summary.open() as file:
            for row in csv.DictReader(file):
                port = row["bench.target"].split(":")[-1].split("/")[0]
                numbers = {key: float(row[key]) for key, _, _ in PANELS}
                levels = runs.setdefault(servers.get(port, row["bench.target"]), {})
                best = levels.get(concurrency)
                if best is None or numbers[PANELS[0][0]] > best[PANELS[0][0]]:
                    levels[concurrency] = numbers
    return runs


def markdown_table(runs: dict[str, dict[int, dict[str, float]]]) -> str:
    lines = ["| server | concurrency | output tok/s | ITL p50 ms | TTFT p50 ms |",
             "|---|---|---|---|---|"]
    for label, by_concurrency in runs.items():
        for concurrency, row in sorted(by_concurrency.items()):
            lines.append(f"| {label} | {concurrency} | {row['output_tokens_per_s']:.1f} | "
                         f"{row['itl_p50_s'] * 1e3:.1f} | {row['ttft_p50_s'] * 1e3:.0f} |")
    return "\n".join(lines)


def plot(runs: dict[str, dict[int, dict[str, float]]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, panels = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4))
    for panel, (key, label, factor) in zip(panels, PANELS):
        for server, by_concurrency in runs.items():
            levels = sorted(by_concurrency)
            panel.plot(levels, [by_concurrency[c][key] * factor for c in levels], marker="o",
                       label=server)
        panel.set_xscale("log", base=2)
        panel.set_yscale("log")
        panel.set_xlabel("concurrent streams")
        panel.set_ylabel(label)
        panel.grid(True, which="both", alpha=0.3)
    panels[0].legend()
    figure.suptitle("SmolLM2-135M, 200-token prompts, 128 tokens out, 2 CPU cores")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--label", action="append", default=[], metavar="PORT=LABEL",
                        help="name the server on PORT (default: the ports of vs_peers.sh)")
    args = parser.parse_args()
    servers = {**SERVERS, **dict(item.split("=", 1) for item in args.label)}
    runs = read_runs(args.out_dir, servers)
    if not runs:
        raise SystemExit(f"no c*/summary.csv under {args.out_dir}")
    plot(runs, args.out_dir / "vs_peers.png")
    print(markdown_table(runs))


if __name__ == "__main__":
    main()
