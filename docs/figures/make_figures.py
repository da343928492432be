"""Generate the figures used by the npconv documentation.

Run from anywhere::

    python docs/figures/make_figures.py

Writes ``im2col.png`` and ``col2im.png`` next to this script. The script is
self-contained (NumPy + Matplotlib only, Agg backend, no randomness) so it can
be run without npconv installed, and its output is byte-for-byte reproducible
for a given Matplotlib version.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent

# Colour-blind friendly palette (Okabe-Ito).
BLUE = "#0072B2"
ORANGE = "#E69F00"
GREEN = "#009E73"
GREY = "#9a9a9a"
LIGHT = "#f4f4f4"

plt.rcParams.update(
    {
        "font.family": "DejaVu Sans",
        "font.size": 11,
    }
)


def _save(fig: plt.Figure, name: str) -> None:
    path = OUT_DIR / name
    # Drop the "Software" tag so the PNG does not depend on the exact version string.
    fig.savefig(path, dpi=150, bbox_inches="tight", facecolor="white", metadata={"Software": None})
    plt.close(fig)
    print(f"wrote {path}")


def _blend(colour: str, alpha: float) -> tuple[float, float, float]:
    """Colour mixed with white (opaque, so overlapping cells stay readable)."""
    rgb = np.array(matplotlib.colors.to_rgb(colour))
    return tuple(alpha * rgb + (1 - alpha) * np.ones(3))


def _grid(ax, values, fills, fontsize=13, text_colours=None):
    """Draw a matrix of numbers as a grid of unit cells in its own axes, row 0 at the top."""
    rows, cols = values.shape
    for i in range(rows):
        for j in range(cols):
            ax.add_patch(
                Rectangle((j, rows - 1 - i), 1, 1, facecolor=fills[i][j], edgecolor="#555555", lw=1)
            )
            colour = "black" if text_colours is None else text_colours[i][j]
            ax.text(
                j + 0.5,
                rows - 0.5 - i,
                str(values[i, j]),
                ha="center",
                va="center",
                fontsize=fontsize,
                color=colour,
            )
    ax.set_xlim(-0.05, cols + 0.05)
    ax.set_ylim(-0.05, rows + 0.05)
    ax.set_aspect("equal")
    ax.axis("off")


def _outline(ax, nrows, row, col, height, width, colour, lw=3.5):
    """Thick outline around the block of cells starting at (row, col) (row 0 on top)."""
    ax.add_patch(
        Rectangle(
            (col, nrows - row - height),
            width,
            height,
            fill=False,
            edgecolor=colour,
            lw=lw,
            zorder=5,
        )
    )


def figure_im2col() -> None:
    H = W = 4
    kh = kw = 2
    stride = 1
    Ho = (H - kh) // stride + 1
    Wo = (W - kw) // stride + 1
    L = Ho * Wo
    K = kh * kw

    x = np.arange(1, H * W + 1).reshape(H, W)  # pixel values 1..16, numbered row-major

    # im2col by plain index arithmetic: row r = (ki, kj) kernel offset, column l = (oi, oj) window.
    cols = np.empty((K, L), dtype=x.dtype)
    for ki in range(kh):
        for kj in range(kw):
            for oi in range(Ho):
                for oj in range(Wo):
                    cols[ki * kw + kj, oi * Wo + oj] = x[oi * stride + ki, oj * stride + kj]

    # Two highlighted receptive fields: window (0, 0) and window (1, 2).
    highlights = [((0, 0), BLUE), ((1, 2), ORANGE)]

    in_fill = [[LIGHT] * W for _ in range(H)]
    col_fill = [[LIGHT] * L for _ in range(K)]
    out_fill = [[LIGHT] * Wo for _ in range(Ho)]
    for (oi, oj), colour in highlights:
        for ki in range(kh):
            for kj in range(kw):
                in_fill[oi * stride + ki][oj * stride + kj] = _blend(colour, 0.35)
        for r in range(K):
            col_fill[r][oi * Wo + oj] = _blend(colour, 0.35)
        out_fill[oi][oj] = _blend(colour, 0.35)

    # Everything is drawn in one axes with data coordinates = cell units, so all cells are
    # the same size. Each panel is a grid placed at an (x0, y0) offset (lower-left corner).
    fig, ax = plt.subplots(figsize=(14.5, 4.4))
    ax.set_aspect("equal")
    ax.axis("off")

    def grid(x0, y0, values, fills, fontsize=14):
        rows, ncols = values.shape
        for i in range(rows):
            for j in range(ncols):
                ax.add_patch(
                    Rectangle(
                        (x0 + j, y0 + rows - 1 - i),
                        1,
                        1,
                        facecolor=fills[i][j],
                        edgecolor="#555555",
                        lw=1,
                    )
                )
                ax.text(
                    x0 + j + 0.5,
                    y0 + rows - 0.5 - i,
                    str(values[i, j]),
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                )

    def outline(x0, y0, nrows, row, col, height, width, colour):
        ax.add_patch(
            Rectangle(
                (x0 + col, y0 + nrows - row - height),
                width,
                height,
                fill=False,
                edgecolor=colour,
                lw=3.5,
                zorder=5,
            )
        )

    def arrow(xa, xb, y, label):
        ax.add_patch(
            FancyArrowPatch(
                (xa, y), (xb, y), arrowstyle="-|>", mutation_scale=20, lw=1.8, color="#444444"
            )
        )
        ax.text(
            (xa + xb) / 2, y + 0.2, label, ha="center", va="bottom", fontsize=11, color="#444444"
        )

    title_y = 5.3
    # --- input ---
    xi, yi = 0.0, 0.0
    grid(xi, yi, x, in_fill)
    for (oi, oj), colour in highlights:
        outline(xi, yi, H, oi * stride, oj * stride, kh, kw, colour)
    for j in range(W):
        ax.text(
            xi + j + 0.5, yi + H + 0.08, str(j), ha="center", va="bottom", fontsize=9, color=GREY
        )
    for i in range(H):
        ax.text(
            xi - 0.12, yi + H - 0.5 - i, str(i), ha="right", va="center", fontsize=9, color=GREY
        )
    ax.text(
        xi + W / 2,
        title_y,
        f"input x  ({H}×{W}, 1 channel)\nkernel {kh}×{kw}, stride {stride}",
        ha="center",
        va="bottom",
        fontsize=12,
    )

    # --- column matrix ---
    xc, yc = xi + W + 5.0, 0.0
    grid(xc, yc, cols, col_fill)
    for (oi, oj), colour in highlights:
        outline(xc, yc, K, 0, oi * Wo + oj, K, 1, colour)
    for ki in range(kh):
        for kj in range(kw):
            r = ki * kw + kj
            ax.text(
                xc - 0.12,
                yc + K - 0.5 - r,
                f"offset ({ki},{kj})",
                ha="right",
                va="center",
                fontsize=10,
                color="#333333",
            )
    for oi in range(Ho):
        for oj in range(Wo):
            col = oi * Wo + oj
            ax.text(
                xc + col + 0.5,
                yc + K + 0.08,
                f"({oi},{oj})",
                ha="center",
                va="bottom",
                fontsize=9,
                color="#333333",
            )
    ax.text(
        xc + L / 2,
        yc - 0.3,
        "column = window (i, j), in row-major order",
        ha="center",
        va="top",
        fontsize=10,
        color="#333333",
    )
    ax.text(
        xc + L / 2,
        title_y,
        f"im2col(x): column matrix  ({K}×{L})\none column per window, one row per kernel offset",
        ha="center",
        va="bottom",
        fontsize=12,
    )
    arrow(xi + W + 0.25, xc - 2.2, H / 2, "im2col")

    # --- output ---
    xo, yo = xc + L + 2.4, (K - Ho) / 2
    out_labels = np.array([[f"y{oi}{oj}" for oj in range(Wo)] for oi in range(Ho)])
    grid(xo, yo, out_labels, out_fill, fontsize=12)
    for (oi, oj), colour in highlights:
        outline(xo, yo, Ho, oi, oj, 1, 1, colour)
    ax.text(
        xo + Wo / 2,
        title_y,
        f"output y  ({Ho}×{Wo})\ny = (w @ columns).reshape({Ho}, {Wo})",
        ha="center",
        va="bottom",
        fontsize=12,
    )
    arrow(xc + L + 0.25, xo - 0.25, K / 2, "w @")
    ax.text(
        (xc + L + xo) / 2,
        K / 2 - 0.25,
        f"w: 1×{K}",
        ha="center",
        va="top",
        fontsize=9,
        color="#444444",
    )

    ax.set_xlim(xi - 0.5, xo + Wo + 0.3)
    ax.set_ylim(yc - 1.0, title_y + 1.0)
    _save(fig, "im2col.png")


def figure_col2im() -> None:
    H = W = 5
    k = 3

    def overlap_count(stride: int) -> np.ndarray:
        """fold(unfold(ones)) by plain index arithmetic: windows covering each pixel."""
        n_out = (H - k) // stride + 1
        count = np.zeros((H, W), dtype=int)
        for oi in range(n_out):
            for oj in range(n_out):
                count[oi * stride : oi * stride + k, oj * stride : oj * stride + k] += 1
        return count

    counts = {1: overlap_count(1), 2: overlap_count(2)}
    vmax = max(int(c.max()) for c in counts.values())
    cmap = plt.get_cmap("viridis")
    norm = matplotlib.colors.Normalize(vmin=0, vmax=vmax)

    fig, axes = plt.subplots(1, 2, figsize=(8.6, 4.6))
    fig.subplots_adjust(left=0.02, right=0.87, top=0.8, bottom=0.14, wspace=0.1)
    for ax, (stride, count) in zip(axes, counts.items(), strict=True):
        fills = [[cmap(norm(v)) for v in row] for row in count]
        text = [["white" if norm(v) < 0.55 else "black" for v in row] for row in count]
        _grid(ax, count, fills, fontsize=16, text_colours=text)
        n_out = (H - k) // stride + 1
        ax.set_title(
            f"{H}×{W} input, {k}×{k} kernel, stride {stride}\n"
            f"({n_out}×{n_out} = {n_out * n_out} windows)",
            fontsize=12,
        )
        # Outline the first window to show the kernel footprint.
        _outline(ax, H, 0, 0, k, k, ORANGE, lw=3)
    fig.suptitle("col2im(im2col(ones)): how many windows cover each pixel", fontsize=14, y=0.97)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    cax = fig.add_axes([0.89, 0.2, 0.02, 0.52])
    cbar = fig.colorbar(sm, cax=cax, ticks=range(vmax + 1))
    cbar.set_label("overlap count")
    fig.text(
        0.44,
        0.0,
        "col2im sums the values of overlapping windows, so col2im(im2col(x)) = count · x, not x.\n"
        "It is the adjoint of im2col, not its inverse (orange: the first window).",
        ha="center",
        va="bottom",
        fontsize=11,
    )
    _save(fig, "col2im.png")


def main() -> None:
    figure_im2col()
    figure_col2im()


if __name__ == "__main__":
    main()
