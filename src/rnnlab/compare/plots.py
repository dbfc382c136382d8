"""The report's figures, each a function from measurements to PNG bytes (matplotlib, Agg backend)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

CELL_COLOURS = {"rnn": "#1b9e77", "lstm": "#d95f02", "gru": "#7570b3"}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def curves_grid(panels: list[tuple[str, dict[str, list[tuple[list, list]]]]], ylabel: str, *, log: bool = False,
                threshold: float | None = None, xlabel: str = "training step") -> bytes:
    """One panel per (title, {cell: [(x, y) per seed]}); seeds drawn thin in the cell's colour."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.0), squeeze=False, sharey=True)
    for ax, (title, by_cell) in zip(axes[0], panels):
        for cell, runs in by_cell.items():
            for j, (x, y) in enumerate(runs):
                ax.plot(x, y, color=CELL_COLOURS.get(cell), lw=1.2, alpha=0.8, label=cell.upper() if j == 0 else None)
        if threshold is not None:
            ax.axhline(threshold, color="k", ls=":", lw=1)
        if log:
            ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=8)
    return _png(fig)


def solve_ladder(panels: list[tuple[str, dict[str, dict[int, float]]]]) -> bytes:
    """Share of seeds solving each length: one panel per task, a line per cell."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 2.8), squeeze=False, sharey=True)
    for ax, (title, by_cell) in zip(axes[0], panels):
        for k, (cell, share) in enumerate(by_cell.items()):
            lengths = sorted(share)
            ax.plot(lengths, [share[t] + (k - 1) * 0.015 for t in lengths], "o-", color=CELL_COLOURS.get(cell), label=cell.upper())
        ax.set_xscale("log")
        ax.set_xticks(sorted({t for s in by_cell.values() for t in s}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_xaxis().set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("sequence length T")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of seeds solved")
    axes[0][0].legend(fontsize=8)
    return _png(fig)


def gradient_profiles(panels: list[tuple[str, dict[str, list[np.ndarray]]]]) -> bytes:
    """‖∂L/∂h_t‖ against t on a log scale; one panel per stage (init, trained), a line per seed."""
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.0), squeeze=False, sharey=True)
    for ax, (title, by_cell) in zip(axes[0], panels):
        for cell, runs in by_cell.items():
            for j, norms in enumerate(runs):
                norms = np.asarray(norms, dtype=float)
                ax.plot(np.arange(norms.size), np.where(norms > 0, norms, np.nan), color=CELL_COLOURS.get(cell),
                        lw=1.2, alpha=0.8, label=cell.upper() if j == 0 else None)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("time step t (loss at the last step)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("‖∂L/∂h_t‖")
    axes[0][0].legend(fontsize=8)
    return _png(fig)


def gate_histograms(by_cell: dict[str, dict[str, list[int]]]) -> bytes:
    """Histograms of every σ gate's activations from their counts in equal bins of [0, 1], one panel per cell kind."""
    cells = [c for c in by_cell if by_cell[c]]
    fig, axes = plt.subplots(1, max(len(cells), 1), figsize=(4.0 * max(len(cells), 1), 2.9), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        for gate, counts in by_cell[cell].items():
            counts = np.asarray(counts, dtype=float)
            edges = np.linspace(0.0, 1.0, counts.size + 1)
            ax.stairs(counts / (counts.sum() * np.diff(edges)), edges, lw=1.4, label=gate)  # a density
        ax.axvline(0.1, color="k", ls=":", lw=1)
        ax.axvline(0.9, color="k", ls=":", lw=1)
        ax.set_title(f"{cell.upper()} gates", fontsize=10)
        ax.set_xlabel("activation")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("density")
    return _png(fig)


def saturation_scatter(by_cell: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]) -> bytes:
    """Per unit: fraction of time left-saturated (x) against right-saturated (y), as in Karpathy et al. 2015."""
    cells = [c for c in by_cell if by_cell[c]]
    fig, axes = plt.subplots(1, max(len(cells), 1), figsize=(3.4 * max(len(cells), 1), 3.2), squeeze=False)
    for ax, cell in zip(axes[0], cells):
        for gate, (left, right) in by_cell[cell].items():
            ax.scatter(left, right, s=10, alpha=0.7, label=gate)
        ax.plot([0, 1], [1, 0], color="k", lw=0.6, ls=":")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{cell.upper()}", fontsize=10)
        ax.set_xlabel("fraction left-saturated (< 0.1)")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("fraction right-saturated (> 0.9)")
    return _png(fig)


def grouped_bars(groups: list[str], series: dict[str, list[float]], ylabel: str, *, log: bool = False,
                 errors: dict[str, list[float]] | None = None, hlines: dict[str, float] | None = None) -> bytes:
    """Bars per group (e.g. cells), one colour per series (e.g. engines); optional reference lines."""
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(groups) * max(len(series), 1) * 0.6 + 2), 3.0))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for j, (name, vals) in enumerate(series.items()):
        err = None if errors is None else errors.get(name)
        colour = CELL_COLOURS.get(name)
        ax.bar(x + (j - (len(series) - 1) / 2) * width, vals, width, yerr=err, label=name, color=colour, capsize=3)
    for j, (name, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, color=f"C{j + 5}", ls="--", lw=1.2, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)
