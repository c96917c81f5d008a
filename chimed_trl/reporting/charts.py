"""The one matplotlib set-up of the reports (files only: the Agg backend, no display) and their shared bar chart."""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (charts are written to files on machines without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> str:
    """Write ``fig`` as a PNG, close it (figures are kept alive by pyplot otherwise); returns the file name."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot().close(fig)
    return path.name


def bars(values: dict[str, float], path: Path, title: str, ylabel: str, xlabel: str | None = None) -> str:
    """One bar per entry of ``values``, labelled with its key; returns the file name."""
    fig, ax = pyplot().subplots(figsize=(max(4, 0.9 * len(values) + 2), 3.4))
    ax.bar(range(len(values)), list(values.values()), color="#4C72B0")
    long_labels = any(len(str(k)) > 3 for k in values)
    ax.set_xticks(range(len(values)), [str(k) for k in values], rotation=30 if long_labels else 0,
                  ha="right" if long_labels else "center", fontsize=8)  # fmt: skip
    ax.set(title=title, ylabel=ylabel, xlabel=xlabel or "")
    return save(fig, path)
