"""matplotlib set up for files (Agg), shared by the studies' plots."""

from __future__ import annotations


def figure(rows: int, cols: int, width: float = 4.5, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(width * cols, height * rows))
    return fig, axes


def save(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def log_loss_axis(ax) -> None:
    """A log-scale loss axis labelled in plain numbers (losses span less than a decade)."""
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.ticklabel_format(axis="y", style="plain", useOffset=False)
    ax.xaxis.set_minor_formatter(NullFormatter())
