"""The benchmarks' one results module: every table and generated block, from the results JSON.

    python -m benchmarks.report              # reads and writes benchmarks/results/ and DOC

Reads from the results folder ``accuracy.json``, every ``inference_cost_*.json`` (one per device
and precision) and ``train_cost_*.json``, ``predictor_cost.json``, ``paste_cost.json``,
``thin_objects.json``, ``thin_oriented.json`` with ``oriented_inference_cpu.json``,
``quickstart.json`` (a copy of a quickstart run's ``output/quickstart/summary.json``),
``quickstart_variants.json`` and ``export_speed_cpu.json``;
writes ``benchmarks.md`` and ``thin_objects.md`` there, the plots (``benchmarks.plots``) and,
for the committed results, the generated blocks of ``DOC`` (``MARKERS``), so that no figure in
the documentation is typed by hand. Every cell is a mean over seeds with the lowest and highest
seed in brackets (:func:`mean_cell`), every difference its mean with each seed's in brackets
(:func:`difference`), and every target "met" or ``MISSED`` (:func:`verdict`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from statistics import fmean

from benchmarks.harness import RESULTS_DIR, ROOT

DOC = ROOT / "docs" / "benchmarks.md"
# The blocks of DOC, each between "<!-- generated:NAME -->" and "<!-- /generated:NAME -->".
MARKERS = (
    "benchmarks",
    "quickstart",
    "export",
    "thin_objects",
    "quickstart_variants",
    "thin_oriented",
)
MISSED = "**missed**"
THIN_DATA_COMMAND = "python -m benchmarks.thin.data"

NAMES = {
    "retinamask": "RetinaMask",
    "retinanet": "RetinaNet (d2)",
    "mask_rcnn": "Mask R-CNN (d2)",
    "retinamask_no_mask_loss": "RetinaMask, mask loss off",
    "retinamask_p2": "RetinaMask, masks from P2–P5",
}
THIN_NAMES = {
    **NAMES,
    "retinamask": "RetinaMask, paper's masks (P3–P5, BCE)",
    "retinamask_56": "RetinaMask, 56×56 masks",
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
THIN_TESTS = {
    "": "",
    "mask_nms": " + mask NMS",
    "mask_nms_no_box_nms": " + mask NMS without box stage",
    "agnostic": " + class-agnostic NMS",
    "mask_nms_agnostic": " + mask NMS, class-agnostic",
    "nms_05": " + test NMS 0.5",
}
EXPORT_RUNTIMES = ("eager", "torchscript", "onnxruntime")  # columns of the export speed table
# The benchmark targets, each a ratio or difference measured within one run.
BOX_AP_GAIN = 1.0  # RetinaMask box AP >= RetinaNet box AP + 1
MASK_AP_LOSS = 1.0  # RetinaMask mask AP >= Mask R-CNN mask AP - 1
INFERENCE_OVER_RETINANET = 1.15  # synthetic evaluation (top-50 masks): ms/image <= 1.15x RetinaNet
COCO_OVER_RETINANET = 1.05  # 800x1333, trained-like score candidates: ms/image <= 1.05x RetinaNet
PREDICTOR_OVER_RETINANET = 1.2  # predictor at its threshold: ms/image <= 1.2x the box-only model
TRAIN_OVER_RETINANET = 1.4  # training s/iter <= 1.4x RetinaNet's, side by side
THIN_BASELINE, THIN_MASK_RCNN = ("retinamask", ""), ("mask_rcnn", "")
THIN_TIMING_NOTE = "30 fresh training steps, and the first seed's weights on the validation set"
# Results files besides accuracy.json and inference_cost_*.json, by what they hold.
EXTRA_RESULTS = {"predictor": "predictor_cost.json", "paste": "paste_cost.json"}


# The formatters every table uses.


def table(header: str, rows: list[list[str]]) -> list[str]:
    """A markdown table: the ``header`` line, its separator, one line per row of cells."""
    return [header, "|" + "---|" * (header.count("|") - 1)] + [
        "| " + " | ".join(cells) + " |" for cells in rows
    ]


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def mean_cell(values: list[float], digits: int = 1, mean: float | None = None) -> str:
    """The mean of ``values`` (or ``mean``), the lowest and highest in brackets when several."""
    if mean is None:
        mean = fmean(values) if values else None
    if mean is None or len(values) < 2:
        return fmt(mean, digits)
    return f"{mean:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def difference(pairs: list[tuple[float, float]]) -> str:
    """The mean of ``a - b`` over the seeds' (a, b) pairs, each seed's in brackets."""
    diffs = [a - b for a, b in pairs]
    if not diffs:
        return "–"
    return f"{fmean(diffs):+.1f} [{', '.join(f'{d:+.1f}' for d in diffs)}]"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else MISSED)


# Accuracy and cost on the synthetic shapes and at COCO scale (benchmarks.md).


def load_results(results_dir: Path) -> tuple[dict | None, list[dict]]:
    """The accuracy results (or None) and the inference-cost results of every device."""
    accuracy_path = results_dir / "accuracy.json"
    accuracy = json.loads(accuracy_path.read_text()) if accuracy_path.is_file() else None
    costs = [json.loads(p.read_text()) for p in sorted(results_dir.glob("inference_cost_*.json"))]
    return accuracy, costs


def load_extra_results(results_dir: Path) -> dict:
    """The other results found: "predictor", "paste" (one file each) and "train" (a list, one
    per scale and device)."""
    extras: dict = {}
    for key, name in EXTRA_RESULTS.items():
        if (results_dir / name).is_file():
            extras[key] = json.loads((results_dir / name).read_text())
    trains = [json.loads(p.read_text()) for p in sorted(results_dir.glob("train_cost_*.json"))]
    if trains:
        extras["train"] = trains
    return extras


def mean_ap(row: dict, task: str) -> float | None:
    value = row.get(task, {}).get("AP")
    return None if value is None or math.isnan(value) else value


def seed_aps(row: dict, task: str) -> list[float]:
    """The AP of each seed's training (none for a results file of one run)."""
    key = f"{task}_ap"
    return [r[key] for r in row.get("per_seed", []) if r.get(key) is not None]


def _ap_cell(row: dict, task: str) -> str:
    return mean_cell(seed_aps(row, task), mean=mean_ap(row, task))


def _ap_difference(a: dict, b: dict, task: str) -> str:
    pairs = list(zip(seed_aps(a, task), seed_aps(b, task)))
    return difference(pairs or [(mean_ap(a, task), mean_ap(b, task))])


def _ratio(target: str, a: float, b: float, unit: str, digits: int, limit: float) -> tuple:
    """A target row "``a`` ≤ ``limit`` × ``b``"."""
    measured = f"{a:.{digits}f} vs {b:.{digits}f}{unit} ({a / b:.2f}×)"
    return target, measured, verdict(a / b <= limit)


def _gap(target: str, a: dict, b: dict, task: str, least: float) -> tuple | None:
    """A target row "``a``'s mean AP ≥ ``b``'s + ``least``" (None without both APs)."""
    x, y = mean_ap(a, task), mean_ap(b, task)
    if x is None or y is None:
        return None
    return target, f"{x:.1f} vs {y:.1f} ({_ap_difference(a, b, task)})", verdict(x - y >= least)


def targets(
    accuracy: dict | None, costs: list[dict], extras: dict | None = None
) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows; every comparison is within a single run."""
    rows = []
    extras = extras or {}
    if accuracy is not None:
        by = {row["model"]: row for row in accuracy["models"]}
        rm, rn, mr = by["retinamask"], by["retinanet"], by["mask_rcnn"]
        box = _gap(f"box AP ≥ RetinaNet + {BOX_AP_GAIN:g} (synthetic)", rm, rn, "box", BOX_AP_GAIN)
        mask = _gap(
            f"mask AP ≥ Mask R-CNN − {MASK_AP_LOSS:g} (synthetic)", rm, mr, "mask", -MASK_AP_LOSS
        )
        rows += [row for row in (box, mask) if row is not None]
        device = accuracy.get("device_kind", "cpu").upper()
        ms = {m: by[m]["inference"]["median_ms"] for m in by}
        rows += _inference_targets(ms, f"synthetic, {device}")
        target = f"training s/iter ≤ Mask R-CNN (synthetic, {device})"
        rows.append(_ratio(target, rm["train_s_per_iter"], mr["train_s_per_iter"], " s", 2, 1.0))
    predictor = extras.get("predictor")
    if predictor is not None:
        t = predictor["threshold"]
        by = {row["name"]: row["median_ms"] for row in predictor["rows"]}
        target = (
            f"predictor at threshold {t:g} ≤ {PREDICTOR_OVER_RETINANET:g}× RetinaNet "
            "(synthetic, trained quickstart model, CPU)"
        )
        ms = by[f"retinamask@{t:g}"], by[f"boxes_only@{t:g}"]
        rows.append(_ratio(target, *ms, " ms", 1, PREDICTOR_OVER_RETINANET))
    for train in extras.get("train", []):
        ratio = train["ratios"].get("retinamask_over_retinanet")
        if ratio is None:
            continue
        by = {r["model"]: r["s_per_iter"] for r in train["rows"] if not r["amp"]}
        target = (
            f"training s/iter ≤ {TRAIN_OVER_RETINANET:g}× RetinaNet ({_train_where(train)}, "
            "side by side)"
        )
        measured = f"{by['retinamask']:.2f} vs {by['retinanet']:.2f} s ({ratio:.2f}×)"
        rows.append((target, measured, verdict(ratio <= TRAIN_OVER_RETINANET)))
    for cost in costs:
        ms = {row["model"]: row["min_ms"] for row in cost["models"]}
        where = f"R50-FPN 800×1333, {_cost_device(cost)}"
        if "trained_like_candidates" in cost:
            where += f", {cost['trained_like_candidates']} score candidates"
        rows += _inference_targets(ms, where, COCO_OVER_RETINANET)
    return rows


def _train_where(train: dict) -> str:
    weights = "trained weights" if train.get("weights", "random") != "random" else "random weights"
    size = train.get("image_size") or (800, 1333)
    scale = "synthetic" if train["scale"] == "synthetic" else f"R50-FPN {size[0]}×{size[1]}"
    opts = train.get("retinamask_opts") or []
    changed = "".join(f", RetinaMask {k} {v}" for k, v in zip(opts[::2], opts[1::2]))
    return f"{scale}, {weights}{changed}, {train['device_kind'].upper()}"


def _cost_device(cost: dict) -> str:
    precision = cost.get("precision", "fp32")
    return cost["device_kind"].upper() + ("" if precision == "fp32" else f" {precision}")


def _inference_targets(
    ms: dict[str, float], where: str, over_retinanet: float = INFERENCE_OVER_RETINANET
) -> list[tuple[str, str, str]]:
    rm = ms["retinamask"]
    return [
        _ratio(
            f"inference ≤ {over_retinanet:g}× RetinaNet ({where})",
            rm,
            ms["retinanet"],
            " ms",
            0,
            over_retinanet,
        ),
        _ratio(f"inference ≤ Mask R-CNN ({where})", rm, ms["mask_rcnn"], " ms", 0, 1.0),
    ]


def markdown(accuracy: dict | None, costs: list[dict], extras: dict | None = None) -> str:
    """The benchmarks section."""
    extras = extras or {}
    lines = ["## Benchmarks", ""]
    if accuracy is not None:
        lines += _accuracy_lines(accuracy)
    if costs:
        lines += _cost_lines(costs)
    lines += _predictor_lines(extras.get("predictor"))
    lines += _train_lines(extras.get("train", []))
    lines += _paste_lines(extras.get("paste"))
    rows = targets(accuracy, costs, extras)
    if rows:
        lines += ["### Targets", ""]
        lines += table("| target | measured | |", [list(row) for row in rows]) + [""]
    return "\n".join(lines)


def _accuracy_lines(accuracy: dict) -> list[str]:
    spec, data = accuracy["spec"], accuracy["data"]
    lines = [
        "### Accuracy, speed and memory on the synthetic shapes",
        "",
        f"Trained from scratch, side by side in one run: ResNet-{spec['depth']}-GN, "
        f"{spec['fpn_channels']}-channel FPN, {spec['image_size']}² input, "
        f"{spec['max_iter']} iterations of batch {spec['ims_per_batch']} "
        f"(lr {spec['base_lr']:g}); {data['train_images']} training and "
        f"{data['val_images']} validation images. Every model is trained once per seed "
        f"({', '.join(map(str, accuracy['seeds']))}: initial weights and batch order); AP is "
        "the mean over the seeds, the lowest and highest seed in brackets; a difference is the "
        "mean, each seed's in square brackets. "
        f"Device: {accuracy['device']}. Inference: one image per call, the fastest of "
        f"{accuracy.get('repeats_per_image', 1)} calls, median over "
        f"{accuracy['timed_images']} validation images per seed. Training: median step. "
        f"Wall time {accuracy['wall_s'] / 60:.0f} min.",
        "",
    ]
    header = "| model | box AP | mask AP | train s/iter | inference ms/image | peak RSS (MB) |"
    rows = [
        [
            NAMES[row["model"]],
            _ap_cell(row, "box"),
            _ap_cell(row, "mask"),
            f"{row['train_s_per_iter']:.2f}",
            f"{row['inference']['median_ms']:.0f}",
            f"{row['peak_rss_mb']:.0f}",
        ]
        for row in accuracy["models"]
    ]
    lines += table(header, rows) + [""]
    by = {row["model"]: row for row in accuracy["models"]}
    base, off, p2 = by["retinamask"], by.get("retinamask_no_mask_loss"), by.get("retinamask_p2")
    if off is not None and None not in (mean_ap(base, "box"), mean_ap(off, "box")):
        lines += [
            "What the mask loss adds to detection, all else equal: box AP "
            f"{mean_ap(base, 'box'):.1f} with it, {mean_ap(off, 'box'):.1f} without "
            f"({_ap_difference(base, off, 'box')}; `MODEL.RETINAMASK.MASK_LOSS_WEIGHT` 0).",
            "",
        ]
    if p2 is not None and None not in (mean_ap(base, "mask"), mean_ap(p2, "mask")):
        lines += [
            "Masks pooled from P2–P5 (now the default) instead of the paper's P3–P5: "
            f"mask AP {mean_ap(p2, 'mask'):.1f} against {mean_ap(base, 'mask'):.1f} "
            f"({_ap_difference(p2, base, 'mask')}), box AP {mean_ap(p2, 'box'):.1f} against "
            f"{mean_ap(base, 'box'):.1f} ({_ap_difference(p2, base, 'box')}).",
            "",
        ]
    return lines


def _cost_lines(costs: list[dict]) -> list[str]:
    lines = [
        "### Inference cost of the mask branch at COCO scale",
        "",
        "R50-FPN, one 800×1333 image, random weights (box regressors zeroed so that each "
        "model returns its full 100 detections; RetinaNet-family classifier bias set so that "
        "a given number of class scores pass the 0.05 threshold, as a trained model's do, "
        "instead of the ~8 M a random classifier passes), each model in its own process, "
        f"timed calls taking turns ({costs[0]['iters']} per row). ms/image: the fastest call, "
        "the best estimate of a model's own cost on a shared machine (load only adds time); "
        "the median in brackets.",
        "",
    ]
    header = (
        "| device | model | score candidates | masked detections | ms/image (median) "
        "| peak memory (MB) |"
    )
    rows = [
        [
            cost["device"] + ("" if _precision(cost) == "fp32" else f", {_precision(cost)}"),
            NAMES[row["model"]],
            "–" if row.get("passing") is None else f"{row['passing']:,}",
            str(row["masked"]),
            f"{row['min_ms']:.0f} ({row['median_ms']:.0f})",
            _memory(row),
        ]
        for cost in costs
        for row in cost["models"]
    ]
    lines += table(header, rows)
    swept = [c for c in costs if c.get("candidate_sweep")]
    if swept:
        lines += [
            "",
            "Against the number of class scores passing the threshold (where the trained-like "
            f"count comes from: {swept[0]['trained_like_source']}):",
            "",
        ]
        header = (
            "| device | score candidates | RetinaNet ms | RetinaMask ms (50 masks) "
            "| RetinaMask / RetinaNet |"
        )
        rows = []
        for cost in swept:
            by = {(r["model"], r["candidates"]): r for r in cost["candidate_sweep"]}
            for count in sorted({c for m, c in by if m == "retinanet"}):
                rn, rm = by.get(("retinanet", count)), by.get(("retinamask", count))
                if rn is not None and rm is not None:
                    rows.append(
                        [
                            _cost_device(cost),
                            f"{rn['passing']:,}",
                            f"{rn['min_ms']:.0f}",
                            f"{rm['min_ms']:.0f}",
                            f"{rm['min_ms'] / rn['min_ms']:.2f}×",
                        ]
                    )
        lines += table(header, rows)
    lines += [
        "",
        "RetinaMask's time against the number of masked detections "
        "(`MODEL.RETINAMASK.TEST_TOPK_MASKS`; counted at the mask head):",
        "",
    ]
    rows = []
    for cost in costs:
        sweep = cost["mask_count_sweep"]
        base = next((r["min_ms"] for r in sweep if r["masked"] == 0), None)
        for row in sweep:
            extra = fmt(row["min_ms"] - base, 0) if base is not None else "–"
            timing = f"{row['min_ms']:.0f} ({row['median_ms']:.0f})"
            rows.append([_cost_device(cost), str(row["masked"]), timing, extra])
    header = "| device | masked detections | ms/image (median) | + ms over 0 masks |"
    return lines + table(header, rows) + [""]


def _precision(cost: dict) -> str:
    return cost.get("precision", "fp32")


def _memory(row: dict) -> str:
    if "peak_gpu_mb" in row:
        return f"{row['peak_gpu_mb']:.0f} GPU, {row['peak_rss_mb']:.0f} RSS"
    return f"{row['peak_rss_mb']:.0f} RSS"


def _predictor_lines(predictor: dict | None) -> list[str]:
    if predictor is None:
        return []
    t = predictor["threshold"]
    names = {
        f"retinamask@{t:g}": f"RetinaMask predictor, threshold {t:g}",
        f"boxes_only@{t:g}": f"the same model without masks (RetinaNet's work), threshold {t:g}",
        "retinamask_all": "RetinaMask, no threshold (top-50 masks, as evaluated)",
        f"retinamask@{t:g}_bf16": f"RetinaMask predictor, threshold {t:g}, bf16 autocast",
    }
    lines = [
        "### What a predictor call costs",
        "",
        "`RetinaMaskPredictor` with the quickstart-trained model on "
        f"{predictor['rows'][0]['images']} synthetic validation images "
        f"({predictor['device']}), the variants taking turns image by image; the fastest of "
        f"{predictor['repeats']} calls per image, median over the images.",
        "",
    ]
    rows = [
        [names.get(r["name"], r["name"]), f"{r['mean_instances']:.1f}", f"{r['median_ms']:.1f}"]
        for r in predictor["rows"]
    ]
    lines += table("| predictor | instances per image | ms/image |", rows)
    ap = predictor.get("ap")
    if ap:
        fp32, bf16 = ap["fp32"], ap["bf16"]
        lines += [
            "",
            f"bf16 inference against fp32 (same model, validation split): box AP "
            f"{bf16['bbox']['AP']:.1f} vs {fp32['bbox']['AP']:.1f}, mask AP "
            f"{bf16['segm']['AP']:.1f} vs {fp32['segm']['AP']:.1f}; "
            f"{bf16['s_per_image_with_evaluation']:.2f} vs "
            f"{fp32['s_per_image_with_evaluation']:.2f} s per image, evaluation included.",
        ]
    return [*lines, ""]


def _train_lines(trains: list[dict]) -> list[str]:
    if not trains:
        return []
    lines = [
        "### Training cost side by side",
        "",
        "The models take turns step by step on the same batches in one process (learning rate 0, "
        "so every step does the work of the starting weights); median s/iter "
        "(`python -m benchmarks.timing.train_cost`).",
        "",
    ]
    rows = []
    for train in trains:
        base = {r["amp"]: r["s_per_iter"] for r in train["rows"] if r["model"] == "retinanet"}
        for row in train["rows"]:
            ratio = row["s_per_iter"] / base[row["amp"]] if row["amp"] in base else None
            rows.append(
                [
                    _train_where(train),
                    NAMES[row["model"]],
                    "on" if row["amp"] else "off",
                    f"{row['s_per_iter']:.3f}",
                    fmt(ratio, 2),
                    fmt(row.get("peak_gpu_mb"), 0),
                ]
            )
    header = "| setting | model | AMP | s/iter | × RetinaNet | peak GPU memory (MB) |"
    return lines + table(header, rows) + [""]


def _paste_lines(paste: dict | None) -> list[str]:
    """The rejected one-pass paste's measurement (its script left the tree; the JSON stays)."""
    if paste is None:
        return []
    lines = [
        "### Mask pasting on the CPU",
        "",
        "detectron2's paste (one mask at a time) against one pass over all of an image's masks "
        "(`benchmarks/paste_cost.py` of commit 95d7dcf, since removed; "
        f"fastest of {paste['iters']} calls); detectron2's is kept.",
        "",
    ]
    rows = [
        [r["scale"], str(r["masks"]), f"{r['detectron2_ms']:.1f}", f"{r['one_pass_ms']:.1f}"]
        for r in paste["rows"]
    ]
    return lines + table("| image | masks | detectron2 ms | one pass ms |", rows) + [""]


# The thin-objects benchmark (thin_objects.md).


def thin_group(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
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
    """The value at the dotted ``path`` of each row that has one."""
    return [v for v in (_get(r, path) for r in rows) if v is not None]


def _cell(rows: list[dict], path: str, digits: int = 1) -> str:
    return mean_cell(values(rows, path), digits)


def _mean(rows: list[dict], path: str) -> float | None:
    found = values(rows, path)
    return fmean(found) if found else None


def _thin_difference(a: list[dict], b: list[dict], path: str) -> str:
    """``a`` minus ``b`` per common seed."""
    b_by_seed = {r["seed"]: r for r in b}
    pairs = [(_get(r, path), _get(b_by_seed.get(r["seed"], {}), path)) for r in a]
    return difference([(x, y) for x, y in pairs if x is not None and y is not None])


def thin_name(key: tuple[str, str]) -> str:
    return THIN_NAMES.get(key[0], key[0]) + THIN_TESTS.get(key[1], f" + {key[1]}")


def thin_markdown(result: dict) -> str:
    """The thin-objects block."""
    groups = thin_group(result["rows"])
    spec, data = result["spec"], result["data"]
    stats = data["statistics"]
    seeds = sorted({r["seed"] for r in result["rows"]})
    notes = "".join(f" {note}" for note in result.get("notes", []))
    lines = [
        f"Thin-objects set (`{THIN_DATA_COMMAND}`): {data['train_images']} training and "
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
        "Thin AP: pycocotools AP with the other objects ignored (`benchmarks/thin/metrics.py`). "
        "ms/image and s/iter: as measured during the accuracy runs, two of which ran side by "
        'side; "alone": timed one at a time afterwards (`python -m benchmarks.thin.objects '
        f"--timing`: {THIN_TIMING_NOTE})." + notes,
        "",
    ]
    order = [k for k in groups if k[1] == ""] + [k for k in groups if k[1] != ""]
    timing = result.get("timing", {})
    rows = []
    for key in order:
        group = groups[key]
        alone = timing.get(key[0]) if key[1] == "" else None
        rows.append(
            [thin_name(key), str(len(group))]
            + [_cell(group, p) for p in ("box.AP", "mask.AP", "box.thin_AP", "mask.thin_AP")]
            + [_cell(group, "ms_per_image", 0), _cell(group, "train_s_per_iter", 2)]
            + (
                [f"{alone['ms_per_image']:.0f}", f"{alone['train_s_per_iter']:.2f}"]
                if alone
                else ["–", "–"]
            )
        )
    lines += table(
        "| Model | seeds | box AP | mask AP | thin box AP | thin mask AP | ms/image | s/iter "
        "| alone: ms/image | s/iter |",
        rows,
    )
    if THIN_BASELINE in groups:
        base = groups[THIN_BASELINE]
        lines += [
            "",
            "Against RetinaMask with the paper's masks, same seed "
            "(Δ mask AP, Δ thin mask AP, Δ box AP):",
            "",
        ]
        rows = [
            [thin_name(key)]
            + [
                _thin_difference(groups[key], base, p)
                for p in ("mask.AP", "mask.thin_AP", "box.AP")
            ]
            for key in order
            if key != THIN_BASELINE and key[0] != "retinanet"
        ]
        lines += table("| Change | Δ mask AP | Δ thin mask AP | Δ box AP |", rows)
    lines += _thin_per_class(groups, order) + _thin_breakdown(groups, order)
    lines += _thin_targets(groups, result)
    return "\n".join(lines) + "\n"


def _thin_per_class(groups: dict, order: list) -> list[str]:
    named = [(thin_name(key), groups[key]) for key in order if key[1] in ("", "mask_nms")]
    return per_class_table(named)


def per_class_table(named: list[tuple[str, list[dict]]]) -> list[str]:
    """Mask AP per class (box AP for a model without masks) of each (name, seed rows)."""
    classes = next(
        (
            list(rows[0]["mask"]["per_class"])
            for _, rows in named
            if "per_class" in rows[0].get("mask", {})
        ),
        None,
    )
    if classes is None:
        return []
    lines = []
    for name, rows in named:
        task = "mask" if values(rows, "mask.AP") else "box"
        lines.append([name] + [_cell(rows, f"{task}.per_class.{c}") for c in classes])
    header = "| Model | " + " | ".join(classes) + " |"
    return ["", "Mask AP per class (box AP for RetinaNet):", ""] + table(header, lines)


def _thin_breakdown(groups: dict, order: list) -> list[str]:
    lines = [
        "",
        "Where thin objects are lost (thin objects only; all objects in brackets): box recall at "
        "IoU 0.5 with a same-class detection (any score), the same with a detection of any "
        "class, mean mask IoU of the matched detections, confident (score ≥ 0.3) duplicates and "
        "class confusions per object, objects with an anchor of IoU ≥ 0.5, anchors of a square "
        "input:",
        "",
    ]

    def both(group: list[dict], thin: str, every: str, digits: int = 1) -> str:
        return f"{fmt(_mean(group, thin), digits)} ({fmt(_mean(group, every), digits)})"

    rows = []
    for key in order:
        group = groups[key]
        cells = [
            both(group, f"breakdown.thin.{name}", f"breakdown.all.{name}", digits)
            for name, digits in (
                ("box_recall", 1),
                ("box_recall_any_class", 1),
                ("mask_iou", 1),
                ("duplicates_per_gt", 2),
                ("confusions_per_gt", 2),
            )
        ]
        anchors = (
            both(group, "anchors.thin", "anchors.all") if values(group, "anchors.thin") else "–"
        )
        rows.append([thin_name(key), *cells, anchors, fmt(_mean(group, "anchors.count_square"), 0)])
    header = (
        "| Model | box recall | any-class recall | mask IoU | duplicates | confusions | "
        "anchor IoU ≥ 0.5 | anchors |"
    )
    return lines + table(header, rows)


def _thin_targets(groups: dict, result: dict) -> list[str]:
    """The thin-objects targets for the best RetinaMask row by thin mask AP, each a verdict."""
    if THIN_BASELINE not in groups or THIN_MASK_RCNN not in groups:
        return []
    base, mrcnn = groups[THIN_BASELINE], groups[THIN_MASK_RCNN]
    candidates = [k for k in groups if k[0].startswith("retinamask")]
    best = max(candidates, key=lambda k: _mean(groups[k], "mask.thin_AP") or -1.0)
    rows = groups[best]

    def compare(a: float | None, b: float | None, op) -> str:
        return verdict(None if a is None or b is None else op(a, b))

    def thin_compare(a: float | None, b: float | None, op) -> str:
        # A thin-AP target between zeros shows nothing: no model found a thin mask.
        if a is not None and b is not None and a <= 0.0 and b <= 0.0:
            return "**not shown** (all 0)"
        return compare(a, b, op)

    thin, thin_base = _mean(rows, "mask.thin_AP"), _mean(base, "mask.thin_AP")
    thin_mrcnn = _mean(mrcnn, "mask.thin_AP")
    mask, mask_mrcnn = _mean(rows, "mask.AP"), _mean(mrcnn, "mask.AP")
    box, box_mrcnn = _mean(rows, "box.AP"), _mean(mrcnn, "box.AP")
    ms, ms_mrcnn = _mean(rows, "ms_per_image"), _mean(mrcnn, "ms_per_image")
    timing = result.get("timing", {})
    if best[1] == "" and best[0] in timing and "mask_rcnn" in timing:
        ms, ms_mrcnn = timing[best[0]]["ms_per_image"], timing["mask_rcnn"]["ms_per_image"]
    target_rows = [
        [
            "thin mask AP ≥ 2 × the paper's masks'",
            f"{fmt(thin)} vs 2 × {fmt(thin_base)}",
            thin_compare(thin, thin_base, lambda a, b: a >= 2 * b),
        ],
        [
            "thin mask AP ≥ Mask R-CNN's",
            f"{fmt(thin)} vs {fmt(thin_mrcnn)}",
            thin_compare(thin, thin_mrcnn, lambda a, b: a >= b),
        ],
        [
            "mask AP ≥ Mask R-CNN's − 1",
            f"{fmt(mask)} vs {fmt(mask_mrcnn)}",
            compare(mask, mask_mrcnn, lambda a, b: a >= b - 1),
        ],
        [
            "box AP ≥ Mask R-CNN's",
            f"{fmt(box)} vs {fmt(box_mrcnn)}",
            compare(box, box_mrcnn, lambda a, b: a >= b),
        ],
        [
            "ms/image ≤ Mask R-CNN's",
            f"{fmt(ms, 0)} vs {fmt(ms_mrcnn, 0)}",
            compare(ms, ms_mrcnn, lambda a, b: a <= b),
        ],
    ]
    intro = f"Targets, for the best RetinaMask row by thin mask AP ({thin_name(best)}), seed means:"
    return ["", intro, ""] + table("| Target | measured | verdict |", target_rows)


# Thin objects at the models' own resolution, pretrained backbone (benchmarks.thin.oriented).

ORIENTED_NAMES = {
    "retinamask_box": "RetinaMask, box mask RoIs (the default)",
    "retinamask_oriented": "RetinaMask, oriented mask RoIs",
    "retinamask_oriented_atss": "RetinaMask, oriented mask RoIs + ATSS",
    "retinamask_oriented_wide": "RetinaMask, oriented mask RoIs ≥ ¼ as wide as long",
    "retinanet": "RetinaNet (d2)",
    "mask_rcnn": "Mask R-CNN (d2)",
}
ANGLE_BIN_NAMES = {"0-10": "0–10°", "10-30": "10–30°", "30-45": "30–45°", "all": "all"}
COMPACT_CLASSES = ("ring", "blob")
# Targets of the oriented RoIs (issue #22), each against rows of the same run.
ORIENTED_OVER_BOX = 2.0  # thin mask AP >= 2x the box-RoI default's
ORIENTED_OVER_MASK_RCNN = 5.0  # thin mask AP >= Mask R-CNN's + 5
MATCHED_THIN_IOU = 0.75
NEAR_AXIS_RECALL = 0.9
MASK_RCNN_READS = 10.0  # the benchmark ranks: Mask R-CNN's thin mask AP >= 10
COMPACT_LOSS = 1.0  # compact classes' mask AP within 1 of the box-RoI default
ORIENTED_INFERENCE = 1.15  # ms/image <= 1.15x the box-RoI default's


def thin_oriented_markdown(result: dict, inference: dict | None = None) -> str:
    """The block of the oriented-RoI thin benchmark: AP, per-angle cut-out measures, per class,
    the oriented-minus-box differences and the targets, with the inference cost of oriented
    against box RoIs from ``inference`` (``benchmarks.timing.oriented_inference``) when given."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in result["rows"]:
        groups[row["variant"]].append(row)
    order = [v for v in ORIENTED_NAMES if v in groups]
    spec, data = result["spec"], result["data"]
    layout, stats = data["layout"], data["statistics"]
    seeds = sorted({r["seed"] for r in result["rows"]})
    widths = ", ".join(f"{k} {lo}–{hi}" for k, (lo, hi) in layout["bar_widths"].items())
    lines = [
        f"Data: `{THIN_DATA_COMMAND}`'s READABLE layout, {data['train_images']} training and "
        f"{data['val_images']} validation images of {layout['sides'][0]}–{layout['sides'][1]} px "
        f"at their own size (bar widths in px: {widths}; arcs 3–8), {stats['gt']} validation "
        "objects; thin objects = the classes hairline, rod, plank and arc, at any angle. Every "
        "model fine-tunes ImageNet MobileNetV2 (`imagenet://MobileNetV2`, stages to m2 frozen) "
        f"with a {spec['fpn_channels']}-channel FPN, {spec['head_convs']} head convs, "
        f"{spec['mask_convs']}×{spec['mask_dim']} mask head, batch {spec['ims_per_batch']}, "
        f"{spec['max_iter']} iterations, seeds {', '.join(map(str, seeds))}; {result['device']}. "
        "Cells: mean over the seeds (lowest–highest); Δ: per seed [each seed].",
        "",
    ]
    rows = [
        [ORIENTED_NAMES[v], str(len(groups[v]))]
        + [
            _cell(groups[v], path, digits)
            for path, digits in (
                ("box.AP", 1),
                ("mask.AP", 1),
                ("box.thin_AP", 1),
                ("mask.thin_AP", 1),
                ("thin_by_angle.all.mask_iou", 2),
                ("thin_by_angle.0-10.recall", 2),
            )
        ]
        for v in order
    ]
    lines += table(
        "| Model | seeds | box AP | mask AP | thin box AP | thin mask AP | matched thin mask IoU "
        "| recall 0–10° |",
        rows,
    )
    lines += _oriented_by_angle(groups, order)
    lines += per_class_table([(ORIENTED_NAMES[v], groups[v]) for v in order])
    lines += _oriented_differences(groups) + _oriented_targets(groups, inference)
    return "\n".join(lines) + "\n"


def _oriented_by_angle(groups: dict, order: list) -> list[str]:
    lines = [
        "",
        "Thin objects by their angle from the nearest image axis: found (a detection of their "
        "class with box IoU ≥ 0.5, any score); for the found ones, of the best-box detection: mask "
        "IoU, centreline recall and precision (skeletons, clDice), width and angle error of the "
        "minimum-area rectangle (px, degrees) and the share cut into several pieces "
        "(`benchmarks/thin/object_metrics.py`):",
        "",
    ]
    rows = []
    for v in order:
        for key, name in ANGLE_BIN_NAMES.items():
            base = f"thin_by_angle.{key}"
            rows.append(
                [
                    ORIENTED_NAMES[v] if key == "0-10" else "",
                    name,
                    fmt(_mean(groups[v], f"{base}.objects"), 0),
                ]
                + [
                    fmt(_mean(groups[v], f"{base}.{m}"), d)
                    for m, d in (
                        ("recall", 2),
                        ("mask_iou", 2),
                        ("centreline_recall", 2),
                        ("centreline_precision", 2),
                        ("width_error", 1),
                        ("angle_error", 1),
                        ("split", 2),
                    )
                ]
            )
    header = (
        "| Model | angle | objects | recall | mask IoU | centreline recall | centreline precision "
        "| width error | angle error | split |"
    )
    return lines + table(header, rows)


def _oriented_differences(groups: dict) -> list[str]:
    base = groups.get("retinamask_box")
    if not base:
        return []
    paths = ["mask.AP", "mask.thin_AP", "box.AP"] + [f"mask.per_class.{c}" for c in COMPACT_CLASSES]
    rows = [
        [ORIENTED_NAMES[v]] + [_thin_difference(groups[v], base, p) for p in paths]
        for v in ORIENTED_NAMES
        if v.startswith("retinamask_oriented") and v in groups
    ]
    header = (
        "| Change | Δ mask AP | Δ thin mask AP | Δ box AP | "
        + " | ".join(f"Δ {c}" for c in COMPACT_CLASSES)
        + " |"
    )
    return ["", "Against the box-RoI default, same seed:", ""] + table(header, rows)


def _oriented_targets(groups: dict, inference: dict | None) -> list[str]:
    needed = ("retinamask_box", "retinamask_oriented", "mask_rcnn")
    if not all(v in groups for v in needed):
        return []
    box, oriented, mrcnn = (groups[v] for v in needed)
    # Seed means over the seeds the three compared models share.
    seeds = set.intersection(*({r["seed"] for r in rows} for rows in (box, oriented, mrcnn)))

    def mean(rows: list[dict], path: str) -> float | None:
        return _mean([r for r in rows if r["seed"] in seeds], path)

    thin, thin_box = mean(oriented, "mask.thin_AP"), mean(box, "mask.thin_AP")
    thin_mrcnn = mean(mrcnn, "mask.thin_AP")
    iou = mean(oriented, "thin_by_angle.all.mask_iou")
    near = {v: mean(groups[v], "thin_by_angle.0-10.recall") for v in groups}
    best_near = max(
        (v for v in groups if v.startswith("retinamask")), key=lambda v: near[v] or -1.0
    )

    def check(a: float | None, b: float | None, ok) -> str:
        return verdict(None if a is None or b is None else ok(a, b))

    target_rows = [
        [
            "Mask R-CNN's thin mask AP ≥ 10 (the benchmark reads)",
            fmt(thin_mrcnn),
            check(thin_mrcnn, MASK_RCNN_READS, lambda a, b: a >= b),
        ],
        [
            "oriented thin mask AP ≥ 2 × the box default's",
            f"{fmt(thin)} vs 2 × {fmt(thin_box)}",
            check(thin, thin_box, lambda a, b: a >= ORIENTED_OVER_BOX * b),
        ],
        [
            "oriented thin mask AP ≥ Mask R-CNN's + 5",
            f"{fmt(thin)} vs {fmt(thin_mrcnn)} + 5",
            check(thin, thin_mrcnn, lambda a, b: a >= b + ORIENTED_OVER_MASK_RCNN),
        ],
        [
            "oriented matched thin mask IoU ≥ 0.75",
            fmt(iou, 2),
            check(iou, MATCHED_THIN_IOU, lambda a, b: a >= b),
        ],
        [
            f"recall within 10° of an axis ≥ 90% (best: {ORIENTED_NAMES[best_near]})",
            fmt(near[best_near], 2),
            check(near[best_near], NEAR_AXIS_RECALL, lambda a, b: a >= b),
        ],
    ]
    for c in COMPACT_CLASSES:
        a, b = mean(oriented, f"mask.per_class.{c}"), mean(box, f"mask.per_class.{c}")
        target_rows.append(
            [
                f"{c} mask AP within {COMPACT_LOSS:g} of the box default's",
                f"{fmt(a)} vs {fmt(b)}",
                check(a, b, lambda x, y: x >= y - COMPACT_LOSS),
            ]
        )
    intro = f"Targets (means over seeds {', '.join(map(str, sorted(seeds)))}):"
    if inference is not None:
        target_rows += _oriented_inference_rows(inference)
        intro = (
            f"{intro[:-1]}; inference: `python -m benchmarks.timing.oriented_inference`, "
            f"{inference['device']}, each pair timed in turn, fastest of the repeats):"
        )
    return ["", intro, ""] + table("| Target | measured | verdict |", target_rows)


def _oriented_inference_rows(inference: dict) -> list[list[str]]:
    """Inference of oriented against box mask RoIs: the trained thin models at the demo's
    threshold, and the R-50-FPN at 800x1333 for each number of masks."""
    rows = []
    thin = inference.get("thin")
    if thin is not None:
        box, oriented = (thin["rows"][m]["ms_per_image"] for m in ("box", "oriented"))
        rows.append(
            [
                f"inference ≤ 1.15 × box RoIs: thin models at threshold {thin['threshold']:g}",
                f"{oriented:.0f} vs {box:.0f} ms ({oriented / box:.2f}×)",
                verdict(oriented <= ORIENTED_INFERENCE * box),
            ]
        )
    coco = inference.get("coco", {})
    for count in sorted((k for k in coco if k.isdigit()), key=int):
        box, oriented = coco[count]["box_ms"], coco[count]["oriented_ms"]
        rows.append(
            [
                f"inference ≤ 1.15 × box RoIs: R-50-FPN, 800×1333, {count} masks",
                f"{oriented:.0f} vs {box:.0f} ms ({oriented / box:.2f}×)",
                verdict(oriented <= ORIENTED_INFERENCE * box),
            ]
        )
    return rows


# The other generated blocks: the quickstart's line, its variants, the exported model's speed.


def quickstart_markdown(summary: dict) -> str:
    """The quickstart measurement, from a quickstart run's summary.json."""
    ap, seconds = summary["ap"], summary["seconds"]
    threads = summary["omp_num_threads"]
    parts = ", ".join(f"{name} {_minutes(t)}" for name, t in seconds.items())
    return (
        f"Measured on {summary['cpu_count']} CPU cores "
        f"({'OMP_NUM_THREADS=' + threads if threads else 'default threads'}): "
        f"{_minutes(summary['total_seconds'])} in total ({parts}); "
        f"**box AP {ap['bbox/AP']:.1f}** (AP50 {ap['bbox/AP50']:.1f}), "
        f"**mask AP {ap['segm/AP']:.1f}** (AP50 {ap['segm/AP50']:.1f}) on "
        f"{summary['val_images']} validation images{_per_class_mask_ap(ap)} "
        "(`benchmarks/results/quickstart.json`)."
    )


def _per_class_mask_ap(ap: dict) -> str:
    """ "; mask AP per class: disk 80.1, ..." from COCOEvaluator's "segm/AP-<class>" keys."""
    classes = [(k.split("AP-", 1)[1], v) for k, v in ap.items() if k.startswith("segm/AP-")]
    if not classes:
        return ""
    return "; mask AP per class: " + ", ".join(f"{name} {value:.1f}" for name, value in classes)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def quickstart_variants_markdown(result: dict) -> str:
    """Box and mask AP (per class too) of each quickstart variant: seed mean (lowest–highest)."""
    runs: dict[str, list[dict]] = defaultdict(list)
    for run in result["runs"]:
        runs[run["variant"]].append(run)
    classes = sorted(
        {k.split("AP-", 1)[1] for r in result["runs"] for k in r["ap"] if k.startswith("segm/AP-")}
    )
    keys = ["bbox/AP", "segm/AP"] + [f"segm/AP-{c}" for c in classes]
    rows = []
    for name, info in result["variants"].items():
        found = sorted(runs.get(name, []), key=lambda r: r["seed"])
        if found:
            seeds = ", ".join(str(r["seed"]) for r in found)
            cells = [mean_cell([r["ap"][k] for r in found if k in r["ap"]]) for k in keys]
            rows.append([info["description"], seeds, *cells])
    header = "| quickstart variant | seeds | box AP | mask AP | " + " | ".join(
        f"mask AP {c}" for c in classes
    )
    return "\n".join(table(header + " |", rows)) + "\n"


def export_markdown(speed: dict) -> str:
    """The exported model's speed, from ``export_speed_cpu.json``."""
    rounds = sorted({row[name]["n"] for row in speed["rows"] for name in ("eager", "onnxruntime")})
    lines = [
        f"{speed['device']}; onnxruntime {speed['onnxruntime']} with the same thread count. "
        f"ms/image: the fastest of {' or '.join(map(str, rounds))} calls per runtime, the "
        "runtimes taking turns on one image; the median in brackets. Random weights set up to "
        "return 100 detections, 50 with masks.",
        "",
    ]
    rows = []
    for row in speed["rows"]:
        checks = "; ".join(
            f"{label}: {_agreement(row[name])}"
            for name, label in (("torchscript", "TorchScript"), ("onnxruntime", "ONNX"))
        )
        height, width = row["input"]
        ties = f"; {row['eager_tied_scores']} tied scores" if row["eager_tied_scores"] else ""
        rows.append(
            [row["model"], f"{height}×{width}"]
            + [f"{row[n]['ms']:.0f} ({row[n]['median_ms']:.0f})" for n in EXPORT_RUNTIMES]
            + [f"{row['eager_detections']} eager detections{ties}; {checks}"]
        )
    header = "| model | input | eager | TorchScript | onnxruntime | results against eager's |"
    return "\n".join(lines + table(header, rows))


def _agreement(result: dict) -> str:
    text = f"{result['matched_eager']} of {result['detections']} match"
    if result["matched_eager"]:
        text += (
            f" (boxes within {result['max_box_diff_px']:.1g} px, scores within "
            f"{result['max_score_diff']:.1g})"
        )
    return text


# Writing the results.


def update_blocks(path: Path, blocks: dict[str, str]) -> None:
    """Replace what stands between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``
    in ``path`` by ``blocks[NAME]``; a missing marker is an error, before anything is written."""
    text = path.read_text(encoding="utf-8")
    for name, body in blocks.items():
        start, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
        head, found_start, rest = text.partition(start)
        _, found_end, tail = rest.partition(end)
        if not (found_start and found_end):
            raise ValueError(f"{path} has no {start} ... {end} block")
        text = f"{head}{start}\n{body.strip()}\n{end}{tail}"
    path.write_text(text, encoding="utf-8")


def load(results_dir: Path, name: str) -> dict | None:
    """The results file ``name`` in ``results_dir``, or None."""
    path = results_dir / name
    return json.loads(path.read_text()) if path.is_file() else None


def blocks(results_dir: Path) -> dict[str, str]:
    """The generated blocks (MARKERS) that the results in ``results_dir`` give."""
    accuracy, costs = load_results(results_dir)
    out = {}
    if accuracy is not None or costs:
        section = markdown(accuracy, costs, load_extra_results(results_dir))
        out["benchmarks"] = section.split("\n", 1)[1]  # without its heading
    makers = {
        "quickstart": ("quickstart.json", quickstart_markdown),
        "export": ("export_speed_cpu.json", export_markdown),
        "thin_objects": ("thin_objects.json", thin_markdown),
        "quickstart_variants": ("quickstart_variants.json", quickstart_variants_markdown),
    }
    for marker, (name, make) in makers.items():
        result = load(results_dir, name)
        if result is not None:
            out[marker] = make(result)
    oriented = load(results_dir, "thin_oriented.json")
    if oriented is not None:
        inference = load(results_dir, "oriented_inference_cpu.json")
        out["thin_oriented"] = thin_oriented_markdown(oriented, inference)
    return out


def publish(results_dir: Path, doc: Path | None = None) -> dict[str, str]:
    """Write ``benchmarks.md``, ``thin_objects.md`` and the plots into ``results_dir``; for the
    committed results also the blocks of ``doc`` (default DOC). Returns the blocks."""
    from benchmarks import plots

    accuracy, costs = load_results(results_dir)
    if accuracy is None and not costs:
        raise FileNotFoundError(f"no accuracy.json or inference_cost_*.json in {results_dir}")
    found = blocks(results_dir)
    (results_dir / "benchmarks.md").write_text("## Benchmarks\n" + found["benchmarks"], "utf-8")
    if accuracy is not None:
        plots.accuracy_plot(accuracy, results_dir / "accuracy.png")
    if costs:
        plots.inference_cost_plot(costs, results_dir / "inference_cost.png")
    thin = load(results_dir, "thin_objects.json")
    if thin is not None:
        (results_dir / "thin_objects.md").write_text(found["thin_objects"], encoding="utf-8")
        plots.thin_objects_plot(thin, results_dir / "thin_objects.png")
    if doc is not None or results_dir.resolve() == RESULTS_DIR.resolve():
        update_blocks(doc or DOC, found)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    print(publish(args.results_dir)["benchmarks"])


if __name__ == "__main__":
    main()
