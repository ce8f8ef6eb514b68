"""The thin-objects benchmark's README block and plot, from ``results/thin_objects.json``.

Every number is a mean over the seeds that finished, with the lowest and highest seed in
brackets; differences between rows are also given seed by seed (same seed, same data order).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from statistics import fmean

NAMES = {
    "retinamask": "RetinaMask, paper's masks (P3–P5, BCE)",
    "retinanet": "RetinaNet (d2)",
    "mask_rcnn": "Mask R-CNN (d2)",
    "retinamask_56": "RetinaMask, 56×56 masks",
    "retinamask_p2": "RetinaMask, masks from P2–P5",
    "retinamask_56_p2": "RetinaMask, 56×56 masks from P2–P5",
    "retinamask_ratios": "RetinaMask, aspect ratios 0.2–5",
    "retinamask_thin": "RetinaMask, thin config (56×56, P2–P5, ratios 0.2–5)",
    "retinamask_dice": "RetinaMask, Dice mask loss",
    "retinamask_p2_dice": "RetinaMask, P2–P5 + Dice (the default)",
    "retinamask_56_p2_dice": "RetinaMask, 56×56 masks from P2–P5, Dice mask loss",
    "retinamask_p2_dice_ratios": "RetinaMask, P2–P5, Dice, ratios 0.2–5",
    "retinamask_p2_dice_box15": "RetinaMask, P2–P5, Dice, masks over 1.5× boxes",
    "retinamask_d2_recipe": "RetinaMask, detectron2's RetinaNet recipe",
    "retinamask_no_sasl1": "RetinaMask, fixed smooth L1 (β 0.1)",
    "retinamask_coder_1": "RetinaMask, coder weights (1, 1, 1, 1)",
    "retinamask_reg_weight_1": "RetinaMask, box loss weight 1",
    "retinamask_p6_res5": "RetinaMask, P6 from res5",
    "retinamask_no_head_gn": "RetinaMask, heads without GN",
    "retinamask_no_warmup": "RetinaMask, no warm-up",
}
TESTS = {
    "": "",
    "mask_nms": " + mask NMS",
    "mask_nms_no_box_nms": " + mask NMS without box stage",
    "agnostic": " + class-agnostic NMS",
    "mask_nms_agnostic": " + mask NMS, class-agnostic",
    "nms_05": " + test NMS 0.5",
}
TIMING_NOTE = "30 fresh training steps, and the first seed's weights on the validation set"
BASELINE = ("retinamask", "")
MASK_RCNN = ("mask_rcnn", "")


def group(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Rows by (variant, test), each list in seed order."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["variant"], row["test"])].append(row)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def _get(row: dict, path: str) -> float | None:
    value: object = row
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def values(rows: list[dict], path: str) -> list[float]:
    return [v for v in (_get(r, path) for r in rows) if v is not None]


def cell(rows: list[dict], path: str, digits: int = 1) -> str:
    """Mean over seeds, (min–max) when there are several."""
    vals = values(rows, path)
    if not vals:
        return "–"
    mean = fmean(vals)
    if len(vals) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(vals):.{digits}f}–{max(vals):.{digits}f})"


def difference(a: list[dict], b: list[dict], path: str) -> str:
    """``a`` minus ``b`` per common seed, and its mean."""
    b_by_seed = {r["seed"]: r for r in b}
    diffs = []
    for r in a:
        x, y = _get(r, path), _get(b_by_seed.get(r["seed"], {}), path)
        if x is not None and y is not None:
            diffs.append(x - y)
    if not diffs:
        return "–"
    return f"{fmean(diffs):+.1f} [{', '.join(f'{d:+.1f}' for d in diffs)}]"


def _name(key: tuple[str, str]) -> str:
    return NAMES.get(key[0], key[0]) + TESTS.get(key[1], f" + {key[1]}")


def markdown(result: dict) -> str:
    groups = group(result["rows"])
    spec, data = result["spec"], result["data"]
    stats = data["statistics"]
    seeds = sorted({r["seed"] for r in result["rows"]})
    notes = "".join(f" {note}" for note in result.get("notes", []))
    lines = [
        f"Thin-objects set (`{data['generator']}`): {data['train_images']} training and "
        f"{data['val_images']} validation images of 256–384 px, resized to a long side of "
        f"{spec['image_size']} px; {stats['gt']} validation objects, "
        f"{stats['thin_fraction']:.0f}% of them thin (mask < 25% of the box); "
        f"{stats['box_nms_at_risk']:.0f}% of all and {stats['box_nms_at_risk_thin']:.0f}% of "
        f"the thin ones overlap a same-class object's box at IoU > {stats['nms_iou']} "
        "(one of each such pair is lost to box NMS when both are found with those boxes). "
        f"Every model from scratch: R-{spec['depth']}-GN, {spec['fpn_channels']}-channel FPN, "
        f"{spec['head_convs']} head convs, {spec['mask_convs']}×{spec['mask_dim']} mask head, "
        f"batch {spec['ims_per_batch']}, {spec['max_iter']} iterations, seeds "
        f"{', '.join(map(str, seeds))}; {result['device']}. "
        "Cells: mean over the seeds (lowest–highest); Δ: per seed [each seed]. "
        "Thin AP: pycocotools AP with the other objects ignored (`benchmarks/thin_metrics.py`). "
        "ms/image and s/iter: as measured during the accuracy runs, two of which ran side by "
        'side; "alone": timed one at a time afterwards (`thin_objects.py --timing`: '
        f"{TIMING_NOTE})." + notes,
        "",
        "| Model | seeds | box AP | mask AP | thin box AP | thin mask AP | ms/image | s/iter "
        "| alone: ms/image | s/iter |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = [k for k in groups if k[1] == ""] + [k for k in groups if k[1] != ""]
    timing = result.get("timing", {})
    for key in order:
        rows = groups[key]
        alone = timing.get(key[0]) if key[1] == "" else None
        alone_cells = (
            f"{alone['ms_per_image']:.0f} | {alone['train_s_per_iter']:.2f}" if alone else "– | –"
        )
        lines.append(
            f"| {_name(key)} | {len(rows)} | {cell(rows, 'box.AP')} | {cell(rows, 'mask.AP')} | "
            f"{cell(rows, 'box.thin_AP')} | {cell(rows, 'mask.thin_AP')} | "
            f"{cell(rows, 'ms_per_image', 0)} | {cell(rows, 'train_s_per_iter', 2)} | "
            f"{alone_cells} |"
        )
    if BASELINE in groups:
        base = groups[BASELINE]
        lines += [
            "",
            "Against RetinaMask with the paper's masks, same seed "
            "(Δ mask AP, Δ thin mask AP, Δ box AP):",
            "",
            "| Change | Δ mask AP | Δ thin mask AP | Δ box AP |",
            "|---|---|---|---|",
        ]
        for key in order:
            if key == BASELINE or key[0] in ("retinanet",):
                continue
            rows = groups[key]
            lines.append(
                f"| {_name(key)} | {difference(rows, base, 'mask.AP')} | "
                f"{difference(rows, base, 'mask.thin_AP')} | {difference(rows, base, 'box.AP')} |"
            )
    lines += _per_class(groups, order) + _breakdown(groups, order) + _targets(groups, result)
    return "\n".join(lines) + "\n"


def _per_class(groups: dict, order: list) -> list[str]:
    classes = None
    for rows in groups.values():
        if rows and "per_class" in rows[0].get("mask", {}):
            classes = list(rows[0]["mask"]["per_class"])
            break
    if classes is None:
        return []
    lines = [
        "",
        "Mask AP per class (box AP for RetinaNet):",
        "",
        "| Model | " + " | ".join(classes) + " |",
        "|---|" + "---|" * len(classes),
    ]
    for key in order:
        if key[1] not in ("", "mask_nms"):
            continue
        rows = groups[key]
        task = "mask" if values(rows, "mask.AP") else "box"
        lines.append(
            f"| {_name(key)} | "
            + " | ".join(cell(rows, f"{task}.per_class.{c}") for c in classes)
            + " |"
        )
    return lines


def _breakdown(groups: dict, order: list) -> list[str]:
    lines = [
        "",
        "Where thin objects are lost (thin objects only; all objects in brackets): box recall at "
        "IoU 0.5 with a same-class detection (any score), the same with a detection of any "
        "class, mean mask IoU of the matched detections, confident (score ≥ 0.3) duplicates and "
        "class confusions per object, objects with an anchor of IoU ≥ 0.5, anchors of a square "
        "input:",
        "",
        "| Model | box recall | any-class recall | mask IoU | duplicates | confusions | "
        "anchor IoU ≥ 0.5 | anchors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in order:
        rows = groups[key]

        def both(name: str, digits: int = 1, rows: list[dict] = rows) -> str:
            thin = cell(rows, f"breakdown.thin.{name}", digits).split(" (")[0]
            every = cell(rows, f"breakdown.all.{name}", digits).split(" (")[0]
            return f"{thin} ({every})"

        anchors = "–"
        if values(rows, "anchors.thin"):
            anchors = (
                f"{cell(rows, 'anchors.thin').split(' (')[0]} "
                f"({cell(rows, 'anchors.all').split(' (')[0]})"
            )
        count = cell(rows, "anchors.count_square", 0).split(" (")[0]
        lines.append(
            f"| {_name(key)} | {both('box_recall')} | {both('box_recall_any_class')} | "
            f"{both('mask_iou')} | {both('duplicates_per_gt', 2)} | "
            f"{both('confusions_per_gt', 2)} | {anchors} | {count} |"
        )
    return lines


def _mean(rows: list[dict], path: str) -> float | None:
    vals = values(rows, path)
    return fmean(vals) if vals else None


def _targets(groups: dict, result: dict) -> list[str]:
    """The thin-objects targets for the best RetinaMask row by thin mask AP, each a verdict."""
    if BASELINE not in groups or MASK_RCNN not in groups:
        return []
    base, mrcnn = groups[BASELINE], groups[MASK_RCNN]
    candidates = [k for k in groups if k[0].startswith("retinamask")]
    best = max(candidates, key=lambda k: _mean(groups[k], "mask.thin_AP") or -1.0)
    rows = groups[best]

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else ("met" if ok else "**missed**")

    def thin_verdict(ok: bool | None, *aps: float | None) -> str:
        # A thin-AP target between zeros shows nothing: no model found a thin mask.
        if all(ap is not None and ap <= 0.0 for ap in aps):
            return "**not shown** (all 0)"
        return verdict(ok)

    def compare(a: float | None, b: float | None, op) -> bool | None:
        return None if a is None or b is None else op(a, b)

    thin, thin_base = _mean(rows, "mask.thin_AP"), _mean(base, "mask.thin_AP")
    thin_mrcnn = _mean(mrcnn, "mask.thin_AP")
    mask, mask_mrcnn = _mean(rows, "mask.AP"), _mean(mrcnn, "mask.AP")
    box, box_mrcnn = _mean(rows, "box.AP"), _mean(mrcnn, "box.AP")
    ms, ms_mrcnn = _mean(rows, "ms_per_image"), _mean(mrcnn, "ms_per_image")
    timing = result.get("timing", {})
    if best[1] == "" and best[0] in timing and "mask_rcnn" in timing:
        ms, ms_mrcnn = timing[best[0]]["ms_per_image"], timing["mask_rcnn"]["ms_per_image"]

    def fmt(x: float | None, digits: int = 1) -> str:
        return "–" if x is None else f"{x:.{digits}f}"

    return [
        "",
        f"Targets, for the best RetinaMask row by thin mask AP ({_name(best)}), seed means:",
        "",
        "| Target | measured | verdict |",
        "|---|---|---|",
        f"| thin mask AP ≥ 2 × the paper's masks' | {fmt(thin)} vs 2 × {fmt(thin_base)} | "
        f"{thin_verdict(compare(thin, thin_base, lambda a, b: a >= 2 * b), thin, thin_base)} |",
        f"| thin mask AP ≥ Mask R-CNN's | {fmt(thin)} vs {fmt(thin_mrcnn)} | "
        f"{thin_verdict(compare(thin, thin_mrcnn, lambda a, b: a >= b), thin, thin_mrcnn)} |",
        f"| mask AP ≥ Mask R-CNN's − 1 | {fmt(mask)} vs {fmt(mask_mrcnn)} | "
        f"{verdict(compare(mask, mask_mrcnn, lambda a, b: a >= b - 1))} |",
        f"| box AP ≥ Mask R-CNN's | {fmt(box)} vs {fmt(box_mrcnn)} | "
        f"{verdict(compare(box, box_mrcnn, lambda a, b: a >= b))} |",
        f"| ms/image ≤ Mask R-CNN's | {fmt(ms, 0)} vs {fmt(ms_mrcnn, 0)} | "
        f"{verdict(compare(ms, ms_mrcnn, lambda a, b: a <= b))} |",
    ]


def plot(result: dict, path: Path) -> None:
    """Mask AP and thin mask AP of every row, one dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group(result["rows"])
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
    axes[0].set_yticklabels([_name(k) for k in keys], fontsize=7)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
