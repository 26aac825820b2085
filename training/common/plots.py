"""The training curve every export draws: training loss and one quality metric against progress."""

from __future__ import annotations

from pathlib import Path


def plot_curve(path: Path, x: list, loss: list, metric: list, x_label: str, loss_label: str, metric_label: str,
               title: str, metric_limits: tuple[float, float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, loss_ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    loss_ax.plot(x, loss, color="tab:blue")
    loss_ax.set_xlabel(x_label)
    loss_ax.set_ylabel(loss_label, color="tab:blue")
    metric_ax = loss_ax.twinx()
    metric_ax.plot(x, metric, color="tab:red")
    metric_ax.set_ylabel(metric_label, color="tab:red")
    if metric_limits:
        metric_ax.set_ylim(*metric_limits)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
