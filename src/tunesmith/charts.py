"""Charts as inline SVG, drawn by matplotlib: the run report and the data report embed them, so an HTML file
is whole by itself and opens offline.

Figures are built with `matplotlib.figure.Figure`, not pyplot: no global state and no GUI backend, so a
service thread can draw too. Text stays text in the SVG (`svg.fonttype: none`), so the browser sets Chinese
labels in its own fonts rather than matplotlib drawing boxes for glyphs its default font lacks.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "tunesmith", "font.size": 9, "axes.spines.top": False}
_STYLE |= {"axes.spines.right": False, "font.family": ["sans-serif"]}
_METADATA = re.compile(r"\s*<metadata>.*?</metadata>", re.S)
# Lines: (name, xs, ys).
Series = tuple[str, Sequence[float], Sequence[float]]


def _svg(fig: Figure) -> str:
    """The figure as an <svg> element (no XML prologue: it sits inside an HTML page)."""
    buffer = io.StringIO()
    with matplotlib.rc_context(_STYLE), warnings.catch_warnings():
        # matplotlib only measures text it lacks glyphs for (Chinese, say): the browser draws it
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return _METADATA.sub("", text[text.index("<svg") :])  # the RDF block says only "made by matplotlib"


def _figure(width: float = 5.0, height: float = 3.0) -> Figure:  # two side by side on a laptop screen
    with matplotlib.rc_context(_STYLE):
        return Figure(figsize=(width, height), layout="constrained")


def line_chart(series: Sequence[Series], title: str, xlabel: str, ylabel: str, log_y: bool = False) -> str:
    with matplotlib.rc_context(_STYLE):
        fig = _figure()
        ax = fig.add_subplot()
        for name, xs, ys in series:
            ax.plot(xs, ys, label=name, marker="o" if len(xs) <= 30 else None, markersize=3, linewidth=1.0)
        ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
        if log_y:
            ax.set_yscale("log")
        if len(series) > 1:
            ax.legend(frameon=False)
        ax.grid(alpha=0.3)
        return _svg(fig)


def heatmap(matrix: Sequence[Sequence[float]], labels: Sequence[str], title: str) -> str:
    """A confusion matrix: rows are the true labels, columns the predicted ones, each cell with its count."""
    n = len(labels)
    side = min(2.5 + 0.45 * n, 11.0)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(side + 1.2, side)
        ax = fig.add_subplot()
        image = ax.imshow(matrix, cmap="Blues")
        fig.colorbar(image, ax=ax, shrink=0.8)
        ax.set_xticks(range(n), labels, rotation=45 if n > 4 else 0, ha="right" if n > 4 else "center")
        ax.set_yticks(range(n), labels)
        ax.set(title=title, xlabel="predicted", ylabel="true")
        if n <= 20:  # more cells than that and the numbers no longer fit
            top = max((max(row) for row in matrix), default=0) or 1
            for i, row in enumerate(matrix):
                for j, value in enumerate(row):
                    colour = "white" if value > top / 2 else "black"
                    ax.text(j, i, f"{value:g}", ha="center", va="center", color=colour, fontsize=8)
        return _svg(fig)


def bar_chart(names: Sequence[str], values: Sequence[float], title: str, xlabel: str) -> str:
    """Horizontal bars, one per name, in the order given (the first on top)."""
    with matplotlib.rc_context(_STYLE):
        fig = _figure(5.0, min(1.2 + 0.28 * len(names), 12.0))
        ax = fig.add_subplot()
        ax.barh(range(len(names)), values, color="#4878a8")
        ax.set_yticks(range(len(names)), names)
        ax.invert_yaxis()
        ax.set(title=title, xlabel=xlabel)
        ax.grid(axis="x", alpha=0.3)
        return _svg(fig)


def histogram(
    edges: Sequence[float], counts: Sequence[int], title: str, xlabel: str, marker: float | None = None
) -> str:
    """A histogram already counted (`histogram_counts`), with an optional vertical line (a length limit, say)."""
    with matplotlib.rc_context(_STYLE):
        fig = _figure()
        ax = fig.add_subplot()
        ax.stairs(counts, edges, fill=True, color="#4878a8")
        if marker is not None:
            ax.axvline(marker, color="#c44e52", linestyle="--", linewidth=1, label=f"limit {marker:g}")
            ax.legend(frameon=False)
        ax.set(title=title, xlabel=xlabel, ylabel="rows")
        ax.grid(axis="y", alpha=0.3)
        return _svg(fig)


def histogram_counts(values: np.ndarray, bins: int = 40) -> dict[str, list[float]]:
    """Bin edges and counts, as a report keeps them (JSON) for `histogram` to draw."""
    if not len(values):
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(values, bins=min(bins, max(1, int(values.max() - values.min()) + 1)))
    return {"edges": [round(float(e), 2) for e in edges], "counts": [int(c) for c in counts]}


def smoothed(values: Sequence[float], span: int = 20) -> list[float]:
    """An exponential moving average, bias-corrected from the first value (what TensorBoard's smoothing draws)."""
    weight, average, out = 1 - 2 / (span + 1), 0.0, []
    for i, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**i))
    return out
