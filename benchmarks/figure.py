"""The benchmark's figure: network totals and every zoo layer's ratio against torch."""

from __future__ import annotations

import os

from report import DEPTHWISE_LIMIT, LAYER_LIMIT, NETWORK_LIMIT
from zoo import Layer


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    totals, s = result["totals"], result["summary"]
    zoo_fwd = [x for x in s.values() if x["job"]["section"] == "zoo" and x["job"]["op"] ==
               "forward"]
    if totals:
        fig, axes = plt.subplots(2, 1, figsize=(14, 9), height_ratios=[1, 2])
    else:  # a partial run: layers only
        fig, ax = plt.subplots(figsize=(14, 6))
        axes = [None, ax]
    nets = list(totals)
    ax = axes[0] if totals else None
    width = 0.27
    for i, (what, color) in enumerate((("forward", "tab:blue"), ("backward", "tab:orange"),
                                       ("total", "tab:green"))):
        ys, lo, hi = [], [], []
        for net in nets:
            v = totals[net][what]["ratio"]
            ys.append(v["median"] if v else float("nan"))
            lo.append(v["median"] - v["min"] if v else 0)
            hi.append(v["max"] - v["median"] if v else 0)
        xs = [j + (i - 1) * width for j in range(len(nets))]
        if ax is None:
            break
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, color=color,
               label="forward+backward" if what == "total" else what)
    if ax is not None:
        ax.axhline(1.0, color="black", linewidth=1)
        ax.axhline(NETWORK_LIMIT, color="red", linewidth=1, linestyle="--",
                   label=f"must: {NETWORK_LIMIT}x")
        ax.set_xticks(range(len(nets)), nets)
        ax.set_yscale("log")
        ax.set_ylabel("npconv / torch (log)")
        ax.set_title("Network totals (count-weighted), median over rounds, bars: min–max")
        ax.legend(fontsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)

    ax = axes[1]
    labels, fw, bw, colors = [], [], [], []
    palette = plt.get_cmap("tab10")
    nets_seen = list(dict.fromkeys(x["job"]["layer"]["net"] for x in zoo_fwd))
    for x in zoo_fwd:
        item = Layer.from_json(x["job"]["layer"])
        b = s.get(x["job"]["id"].rsplit(":", 1)[0] + ":backward")
        labels.append(f"{item.net[:6]}/{item.name}")
        fw.append(x["ratio"]["median"] if x["ratio"] else float("nan"))
        bw.append(b["ratio"]["median"] if b and b["ratio"] else float("nan"))
        colors.append(palette(nets_seen.index(item.net) % 10))
    xs = range(len(labels))
    ax.scatter(xs, fw, marker="o", c=colors, label="forward", s=18)
    ax.scatter(xs, bw, marker="x", c=colors, label="backward", s=22)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.axhline(LAYER_LIMIT, color="red", linewidth=1, linestyle="--",
               label=f"must: {LAYER_LIMIT}x ({DEPTHWISE_LIMIT}x depthwise)")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, rotation=90, fontsize=6)
    ax.set_ylabel("npconv / torch (log)")
    ax.set_title("Per layer (o forward, x backward; colour: network)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
