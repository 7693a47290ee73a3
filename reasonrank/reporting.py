"""Tables and plots of metrics, for job summaries (people would rather look at these than read JSON)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def metrics_table(columns: Mapping[str, Mapping[str, float]], metrics: Sequence[str] | None = None) -> str:
    """A fixed-width table: one row per metric, one column per system (e.g. BM25, SFT, GRPO)."""
    names = list(columns)
    metrics = list(metrics or dict.fromkeys(m for col in columns.values() for m in col))
    width = max([len("metric"), *map(len, metrics)])
    colw = [max(len(n), 8) for n in names]
    lines = ["  ".join(["metric".ljust(width), *(n.rjust(w) for n, w in zip(names, colw))])]
    lines.append("  ".join(["-" * width, *("-" * w for w in colw)]))
    for m in metrics:
        cells = []
        for n, w in zip(names, colw):
            v = columns[n].get(m)
            cells.append(("-" if v is None else f"{v:.4f}").rjust(w))
        lines.append("  ".join([m.ljust(width), *cells]))
    return "\n".join(lines)


def plot_metrics(columns: Mapping[str, Mapping[str, float]], metrics: Sequence[str], path: str | Path,
                 title: str) -> Path:
    """Grouped bars: each metric, one bar per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(columns)
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(metrics), 3.2))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(metrics))]
        ax.bar(xs, [columns[name].get(m, 0.0) for m in metrics], width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(metrics))], metrics)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize="small")
    return save_figure(fig, path)


def plot_curve(xs: Sequence[float], series: Mapping[str, Sequence[float]], path: str | Path, title: str,
               xlabel: str = "step") -> Path:
    """Line plot of one or more curves over steps (loss, learning rate, reward)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for name, ys in series.items():
        ax.plot(list(xs)[: len(ys)], list(ys), label=name)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize="small")
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write as PNG and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
