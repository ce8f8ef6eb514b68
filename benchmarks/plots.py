"""The benchmarks' plots, from the same results JSON as ``benchmarks.report``'s tables."""

from __future__ import annotations

from pathlib import Path
from statistics import fmean

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file backend)

from benchmarks.report import NAMES, mean_ap, seed_aps, thin_group, thin_name, values  # noqa: E402

COLORS = {
    "retinamask": "tab:red",
    "retinanet": "tab:blue",
    "mask_rcnn": "tab:green",
    "retinamask_no_mask_loss": "tab:orange",
    "retinamask_p2": "tab:purple",
}


def accuracy_plot(accuracy: dict, path: Path) -> None:
    """Four bar charts: box AP, mask AP, training s/iter, inference ms/image."""
    rows = accuracy["models"]
    no_spread = [[] for _ in rows]
    panels = [  # (title, bar heights, each bar's per-seed values for its min-max line)
        ("box AP", [mean_ap(r, "box") for r in rows], [seed_aps(r, "box") for r in rows]),
        ("mask AP", [mean_ap(r, "mask") for r in rows], [seed_aps(r, "mask") for r in rows]),
        ("training s/iter", [r["train_s_per_iter"] for r in rows], no_spread),
        ("inference ms/image", [r["inference"]["median_ms"] for r in rows], no_spread),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (title, heights, spreads) in zip(axes.flat, panels):
        for i, (row, value, aps) in enumerate(zip(rows, heights, spreads)):
            if value is None:
                ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=9)
                continue
            ax.bar(i, value, color=COLORS[row["model"]])
            if len(aps) > 1:  # the lowest to the highest seed
                ax.errorbar(i, value, [[value - min(aps)], [max(aps) - value]], color="black")
            ax.text(i + 0.1, value, _bar_label(value), ha="left", va="bottom", fontsize=9)
        labels = [NAMES[r["model"]].replace(" (", "\n(").replace(", ", ",\n") for r in rows]
        ax.set_xticks(range(len(rows)), labels, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
    fig.suptitle(
        f"Synthetic shapes, same backbone and schedule — {accuracy['device']}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bar_label(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def inference_cost_plot(costs: list[dict], path: Path) -> None:
    """One panel per device: RetinaMask ms/image (fastest call, bar up to the median) against
    masked detections, with RetinaNet's and Mask R-CNN's fastest calls as lines."""
    fig, axes = plt.subplots(1, len(costs), figsize=(5.5 * len(costs), 3.8), squeeze=False)
    for ax, cost in zip(axes[0], costs):
        sweep = cost["mask_count_sweep"]
        fastest = [r["min_ms"] for r in sweep]
        spread = [[0.0] * len(sweep), [r["median_ms"] - f for f, r in zip(fastest, sweep)]]
        ax.errorbar(
            [r["masked"] for r in sweep],
            fastest,
            yerr=spread,
            fmt="o-",
            capsize=3,
            color=COLORS["retinamask"],
            label="RetinaMask (bar: up to the median)",
        )
        for row in cost["models"]:
            if row["model"] == "retinamask":
                continue
            label = f"{NAMES[row['model']]} ({row['masked']} masks)"
            ax.axhline(row["min_ms"], color=COLORS[row["model"]], ls="--", label=label)
        ax.set_xlabel("masked detections")
        ax.set_ylabel("ms / image (fastest call)")
        ax.set_ylim(bottom=0)
        ax.set_title(f"R50-FPN 800×1333 — {cost['device']}", fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def thin_objects_plot(result: dict, path: Path) -> None:
    """Mask AP and thin mask AP of every row, one dot per seed."""
    groups = thin_group(result["rows"])
    keys = [k for k in groups if values(groups[k], "mask.AP")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.45 * len(keys) + 1.5), sharey=True)
    for ax, (path_, title) in zip(axes, (("mask.AP", "mask AP"), ("mask.thin_AP", "thin mask AP"))):
        for y, key in enumerate(keys):
            vals = values(groups[key], path_)
            ax.scatter(vals, [y] * len(vals), s=18, color="tab:gray")
            if vals:
                ax.plot([fmean(vals)] * 2, [y - 0.3, y + 0.3], color="tab:red")
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(keys)))
    axes[0].set_yticklabels([thin_name(k) for k in keys], fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
