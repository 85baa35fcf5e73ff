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
