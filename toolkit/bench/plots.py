"""Throughput against latency, one PNG per sweep axis, with the Pareto front marked.

Each figure has two panels (x: p99 TTFT, p50 TPOT; y: output tokens/s); points are
labelled with the axis value, and the front of jobs no other job beats on both is joined.
"""

from __future__ import annotations

from pathlib import Path

from toolkit.bench.job import JobResult
from toolkit.bench.metrics import pareto_front

PANELS = (("ttft_p99_s", "p99 time to first token (s)"),
          ("tpot_p50_s", "p50 time per output token (s)"))
THROUGHPUT = ("output_tokens_per_s", "output tokens/s")


def write_plots(output_dir: Path, results: list[JobResult], axes: list[str]) -> list[Path]:
    """plot_<axis>.png for each axis (plot.png without one); the written paths."""
    paths = []
    for axis in axes or [None]:
        name = f"plot_{axis}.png" if axis else "plot.png"
        paths.append(plot_axis(output_dir / name, results, axis))
    return paths


def plot_axis(path: Path, results: list[JobResult], axis: str | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, panels = plt.subplots(1, len(PANELS), figsize=(6 * len(PANELS), 4.5))
    for panel, (key, label) in zip(panels, PANELS):
        _draw_panel(panel, results, axis, key, label)
    figure.suptitle(f"throughput vs latency by {axis}" if axis else "throughput vs latency")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _draw_panel(panel, results: list[JobResult], axis: str | None, x_key: str,
                x_label: str) -> None:
    points = [(r.metrics[x_key], r.metrics[THROUGHPUT[0]]) for r in results]
    panel.scatter([p[0] for p in points], [p[1] for p in points], color="tab:blue", zorder=2)
    for result, (x, y) in zip(results, points):
        text = result.axes.get(axis, result.name) if axis else result.name
        panel.annotate(text, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    front = pareto_front(points)
    panel.plot([points[i][0] for i in front], [points[i][1] for i in front], color="tab:red",
               marker="o", markerfacecolor="none", markersize=11, label="Pareto front",
               zorder=1)
    panel.set_xlabel(x_label)
    panel.set_ylabel(THROUGHPUT[1])
    panel.grid(alpha=0.3)
    panel.legend(loc="best")
