"""Make the README's benchmark section (markdown) and the plots from the results JSON.

    python benchmarks/report.py                      # reads and writes benchmarks/results/

Reads ``accuracy.json``, every ``inference_cost_*.json`` (one per device and precision) and
``train_cost_*.json``, and ``predictor_cost.json`` and ``paste_cost.json`` in the results
folder; writes ``benchmarks.md``, ``accuracy.png`` and ``inference_cost.png`` there (and, from
``thin_objects.json``, ``thin_objects.md`` and ``thin_objects.png``: ``thin_report.py``). For the
default results folder it also rewrites the README's generated blocks: the benchmark tables,
the quickstart line (from ``quickstart.json``, a copy of a quickstart run's
``output/quickstart/summary.json``) and the exported model's speed (from
``export_speed_cpu.json``), so that no figure in the README is typed by hand.
"""

import argparse
import json
import math
from pathlib import Path

import thin_report
from harness import RESULTS_DIR

README = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"

NAMES = {
    "retinamask": "RetinaMask",
    "retinanet": "RetinaNet (d2)",
    "mask_rcnn": "Mask R-CNN (d2)",
    "retinamask_no_mask_loss": "RetinaMask, mask loss off",
    "retinamask_p2": "RetinaMask, masks from P2–P5",
}
COLORS = {
    "retinamask": "tab:red",
    "retinanet": "tab:blue",
    "mask_rcnn": "tab:green",
    "retinamask_no_mask_loss": "tab:orange",
    "retinamask_p2": "tab:purple",
}
EXPORT_RUNTIMES = ("eager", "torchscript", "onnxruntime")  # columns of the export speed table
# The benchmark targets, each a ratio or difference measured within one run.
BOX_AP_GAIN = 1.0  # RetinaMask box AP >= RetinaNet box AP + 1
MASK_AP_LOSS = 1.0  # RetinaMask mask AP >= Mask R-CNN mask AP - 1
INFERENCE_OVER_RETINANET = 1.15  # synthetic evaluation (top-50 masks): ms/image <= 1.15x RetinaNet
COCO_OVER_RETINANET = 1.05  # 800x1333, trained-like score candidates: ms/image <= 1.05x RetinaNet
PREDICTOR_OVER_RETINANET = 1.2  # predictor at its threshold: ms/image <= 1.2x the box-only model
TRAIN_OVER_RETINANET = 1.4  # training s/iter <= 1.4x RetinaNet's, side by side
# Results files besides accuracy.json and inference_cost_*.json, by what they hold.
EXTRA_RESULTS = {"predictor": "predictor_cost.json", "paste": "paste_cost.json"}


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


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _ap(row: dict, task: str) -> float | None:
    value = row.get(task, {}).get("AP")
    return None if value is None or math.isnan(value) else value


def _seed_aps(row: dict, task: str) -> list[float]:
    """The AP of each seed's training (none for a results file of one run)."""
    key = f"{task}_ap"
    return [r[key] for r in row.get("per_seed", []) if r.get(key) is not None]


def _ap_cell(row: dict, task: str) -> str:
    """Mean AP over the seeds, the lowest and highest seed in brackets."""
    mean, aps = _ap(row, task), _seed_aps(row, task)
    if mean is None or len(aps) < 2:
        return _fmt(mean)
    return f"{mean:.1f} ({min(aps):.1f}–{max(aps):.1f})"


def _difference(a: dict, b: dict, task: str) -> str:
    """``a``'s mean AP minus ``b``'s, and the difference within each seed's run."""
    diff = _ap(a, task) - _ap(b, task)
    per_seed = [x - y for x, y in zip(_seed_aps(a, task), _seed_aps(b, task))]
    if len(per_seed) < 2:
        return f"{diff:+.1f}"
    return f"{diff:+.1f}; per seed {', '.join(f'{d:+.1f}' for d in per_seed)}"


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**not met**")


def targets(
    accuracy: dict | None, costs: list[dict], extras: dict | None = None
) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) rows; every comparison is within a single run."""
    rows = []
    extras = extras or {}
    if accuracy is not None:
        by = {row["model"]: row for row in accuracy["models"]}
        rm_box, rn_box = _ap(by["retinamask"], "box"), _ap(by["retinanet"], "box")
        rm_mask, mr_mask = _ap(by["retinamask"], "mask"), _ap(by["mask_rcnn"], "mask")
        if rm_box is not None and rn_box is not None:
            rows.append(
                (
                    f"box AP ≥ RetinaNet + {BOX_AP_GAIN:g} (synthetic)",
                    f"{rm_box:.1f} vs {rn_box:.1f} "
                    f"({_difference(by['retinamask'], by['retinanet'], 'box')})",
                    _verdict(rm_box - rn_box >= BOX_AP_GAIN),
                )
            )
        if rm_mask is not None and mr_mask is not None:
            rows.append(
                (
                    f"mask AP ≥ Mask R-CNN − {MASK_AP_LOSS:g} (synthetic)",
                    f"{rm_mask:.1f} vs {mr_mask:.1f} "
                    f"({_difference(by['retinamask'], by['mask_rcnn'], 'mask')})",
                    _verdict(rm_mask - mr_mask >= -MASK_AP_LOSS),
                )
            )
        device = accuracy.get("device_kind", "cpu").upper()
        ms = {m: by[m]["inference"]["median_ms"] for m in by}
        rows += _inference_targets(ms, f"synthetic, {device}")
        train = {m: by[m]["train_s_per_iter"] for m in by}
        ratio = train["retinamask"] / train["mask_rcnn"]
        rows.append(
            (
                f"training s/iter ≤ Mask R-CNN (synthetic, {device})",
                f"{train['retinamask']:.2f} vs {train['mask_rcnn']:.2f} s ({ratio:.2f}×)",
                _verdict(ratio <= 1.0),
            )
        )
    predictor = extras.get("predictor")
    if predictor is not None:
        t = predictor["threshold"]
        by = {row["name"]: row["median_ms"] for row in predictor["rows"]}
        rm, rn = by[f"retinamask@{t:g}"], by[f"boxes_only@{t:g}"]
        rows.append(
            (
                f"predictor at threshold {t:g} ≤ {PREDICTOR_OVER_RETINANET:g}× RetinaNet "
                "(synthetic, trained quickstart model, CPU)",
                f"{rm:.1f} vs {rn:.1f} ms ({rm / rn:.2f}×)",
                _verdict(rm / rn <= PREDICTOR_OVER_RETINANET),
            )
        )
    for train in extras.get("train", []):
        ratio = train["ratios"].get("retinamask_over_retinanet")
        if ratio is None:
            continue
        by = {r["model"]: r["s_per_iter"] for r in train["rows"] if not r["amp"]}
        rows.append(
            (
                f"training s/iter ≤ {TRAIN_OVER_RETINANET:g}× RetinaNet ({_train_where(train)}, "
                "side by side)",
                f"{by['retinamask']:.2f} vs {by['retinanet']:.2f} s ({ratio:.2f}×)",
                _verdict(ratio <= TRAIN_OVER_RETINANET),
            )
        )
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
    over_rn = ms["retinamask"] / ms["retinanet"]
    over_mr = ms["retinamask"] / ms["mask_rcnn"]
    return [
        (
            f"inference ≤ {over_retinanet:g}× RetinaNet ({where})",
            f"{ms['retinamask']:.0f} vs {ms['retinanet']:.0f} ms ({over_rn:.2f}×)",
            _verdict(over_rn <= over_retinanet),
        ),
        (
            f"inference ≤ Mask R-CNN ({where})",
            f"{ms['retinamask']:.0f} vs {ms['mask_rcnn']:.0f} ms ({over_mr:.2f}×)",
            _verdict(over_mr <= 1.0),
        ),
    ]


def markdown(accuracy: dict | None, costs: list[dict], extras: dict | None = None) -> str:
    """The README section."""
    extras = extras or {}
    lines = ["## Benchmarks", ""]
    if accuracy is not None:
        spec, data = accuracy["spec"], accuracy["data"]
        lines += [
            "### Accuracy, speed and memory on the synthetic shapes",
            "",
            f"Trained from scratch, side by side in one run: ResNet-{spec['depth']}-GN, "
            f"{spec['fpn_channels']}-channel FPN, {spec['image_size']}² input, "
            f"{spec['max_iter']} iterations of batch {spec['ims_per_batch']} "
            f"(lr {spec['base_lr']:g}); {data['train_images']} training and "
            f"{data['val_images']} validation images. Every model is trained once per seed "
            f"({', '.join(map(str, accuracy['seeds']))}: initial weights and batch order); AP is "
            "the mean over the seeds, the lowest and highest seed in brackets. "
            f"Device: {accuracy['device']}. Inference: one image per call, the fastest of "
            f"{accuracy.get('repeats_per_image', 1)} calls, median over "
            f"{accuracy['timed_images']} validation images per seed. Training: median step. "
            f"Wall time {accuracy['wall_s'] / 60:.0f} min.",
            "",
            "| model | box AP | mask AP | train s/iter | inference ms/image | peak RSS (MB) |",
            "|---|---|---|---|---|---|",
        ]
        for row in accuracy["models"]:
            lines.append(
                f"| {NAMES[row['model']]} | {_ap_cell(row, 'box')} | {_ap_cell(row, 'mask')} "
                f"| {row['train_s_per_iter']:.2f} | {row['inference']['median_ms']:.0f} "
                f"| {row['peak_rss_mb']:.0f} |"
            )
        lines.append("")
        by = {row["model"]: row for row in accuracy["models"]}
        lines += _ablation_lines(by)
    if costs:
        lines += [
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
            "| device | model | score candidates | masked detections | ms/image (median) "
            "| peak memory (MB) |",
            "|---|---|---|---|---|---|",
        ]
        for cost in costs:
            for row in cost["models"]:
                lines.append(
                    f"| {cost['device']}{_precision_note(cost)} | {NAMES[row['model']]} "
                    f"| {_candidates(row)} | {row['masked']} "
                    f"| {row['min_ms']:.0f} ({row['median_ms']:.0f}) | {_memory(row)} |"
                )
        lines += _candidate_lines(costs)
        lines += [
            "",
            "RetinaMask's time against the number of masked detections "
            "(`MODEL.RETINAMASK.TEST_TOPK_MASKS`; counted at the mask head):",
            "",
            "| device | masked detections | ms/image (median) | + ms over 0 masks |",
            "|---|---|---|---|",
        ]
        for cost in costs:
            sweep = cost["mask_count_sweep"]
            base = next((r["min_ms"] for r in sweep if r["masked"] == 0), None)
            for row in sweep:
                extra = _fmt(row["min_ms"] - base, 0) if base is not None else "–"
                lines.append(
                    f"| {_cost_device(cost)} | {row['masked']} "
                    f"| {row['min_ms']:.0f} ({row['median_ms']:.0f}) | {extra} |"
                )
        lines.append("")
    lines += _predictor_lines(extras.get("predictor"))
    lines += _train_lines(extras.get("train", []))
    lines += _paste_lines(extras.get("paste"))
    rows = targets(accuracy, costs, extras)
    if rows:
        lines += ["### Targets", "", "| target | measured | |", "|---|---|---|"]
        lines += [f"| {t} | {m} | {v} |" for t, m, v in rows]
        lines.append("")
    return "\n".join(lines)


def _ablation_lines(by: dict[str, dict]) -> list[str]:
    """What the mask loss does to box AP, and what pooling masks from P2 does to mask AP."""
    lines = []
    base = by["retinamask"]
    off = by.get("retinamask_no_mask_loss")
    if off is not None and _ap(base, "box") is not None and _ap(off, "box") is not None:
        lines += [
            f"What the mask loss adds to detection, all else equal: box AP {_ap(base, 'box'):.1f} "
            f"with it, {_ap(off, 'box'):.1f} without ({_difference(base, off, 'box')}; "
            "`MODEL.RETINAMASK.MASK_LOSS_WEIGHT` 0).",
            "",
        ]
    p2 = by.get("retinamask_p2")
    if p2 is not None and _ap(base, "mask") is not None and _ap(p2, "mask") is not None:
        lines += [
            "Masks pooled from P2–P5 (now the default) instead of the paper's P3–P5: "
            f"mask AP {_ap(p2, 'mask'):.1f} against {_ap(base, 'mask'):.1f} "
            f"({_difference(p2, base, 'mask')}), box AP {_ap(p2, 'box'):.1f} against "
            f"{_ap(base, 'box'):.1f} ({_difference(p2, base, 'box')}).",
            "",
        ]
    return lines


def _precision_note(cost: dict) -> str:
    precision = cost.get("precision", "fp32")
    return "" if precision == "fp32" else f", {precision}"


def _candidates(row: dict) -> str:
    return "–" if row.get("passing") is None else f"{row['passing']:,}"


def _candidate_lines(costs: list[dict]) -> list[str]:
    """RetinaNet's and RetinaMask's time against the number of passing class scores."""
    swept = [c for c in costs if c.get("candidate_sweep")]
    if not swept:
        return []
    lines = [
        "",
        "Against the number of class scores passing the threshold (where the trained-like count "
        f"comes from: {swept[0]['trained_like_source']}):",
        "",
        "| device | score candidates | RetinaNet ms | RetinaMask ms (50 masks) | RetinaMask / "
        "RetinaNet |",
        "|---|---|---|---|---|",
    ]
    for cost in swept:
        by = {(r["model"], r["candidates"]): r for r in cost["candidate_sweep"]}
        for count in sorted({c for m, c in by if m == "retinanet"}):
            rn, rm = by.get(("retinanet", count)), by.get(("retinamask", count))
            if rn is None or rm is None:
                continue
            lines.append(
                f"| {_cost_device(cost)} | {rn['passing']:,} | {rn['min_ms']:.0f} "
                f"| {rm['min_ms']:.0f} | {rm['min_ms'] / rn['min_ms']:.2f}× |"
            )
    return lines


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
        "| predictor | instances per image | ms/image |",
        "|---|---|---|",
    ]
    for row in predictor["rows"]:
        lines.append(
            f"| {names.get(row['name'], row['name'])} | {row['mean_instances']:.1f} "
            f"| {row['median_ms']:.1f} |"
        )
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
        "(`benchmarks/train_cost.py`).",
        "",
        "| setting | model | AMP | s/iter | × RetinaNet | peak GPU memory (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for train in trains:
        base = {r["amp"]: r["s_per_iter"] for r in train["rows"] if r["model"] == "retinanet"}
        for row in train["rows"]:
            ratio = row["s_per_iter"] / base[row["amp"]] if row["amp"] in base else None
            lines.append(
                f"| {_train_where(train)} | {NAMES[row['model']]} | "
                f"{'on' if row['amp'] else 'off'} | {row['s_per_iter']:.3f} "
                f"| {_fmt(ratio, 2)} | {_fmt(row.get('peak_gpu_mb'), 0)} |"
            )
    return [*lines, ""]


def _paste_lines(paste: dict | None) -> list[str]:
    if paste is None:
        return []
    lines = [
        "### Mask pasting on the CPU",
        "",
        "detectron2's paste (one mask at a time) against one pass over all of an image's masks "
        "(`benchmarks/paste_cost.py`, fastest of "
        f"{paste['iters']} calls); detectron2's is kept.",
        "",
        "| image | masks | detectron2 ms | one pass ms |",
        "|---|---|---|---|",
    ]
    for row in paste["rows"]:
        lines.append(
            f"| {row['scale']} | {row['masks']} | {row['detectron2_ms']:.1f} "
            f"| {row['one_pass_ms']:.1f} |"
        )
    return [*lines, ""]


def _memory(row: dict) -> str:
    if "peak_gpu_mb" in row:
        return f"{row['peak_gpu_mb']:.0f} GPU, {row['peak_rss_mb']:.0f} RSS"
    return f"{row['peak_rss_mb']:.0f} RSS"


def plot_accuracy(accuracy: dict, path: Path) -> None:
    """Four bar charts: box AP, mask AP, training s/iter, inference ms/image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = accuracy["models"]
    no_spread = [[] for _ in rows]
    panels = [  # (title, bar heights, each bar's per-seed values for its min-max line)
        ("box AP", [_ap(r, "box") for r in rows], [_seed_aps(r, "box") for r in rows]),
        ("mask AP", [_ap(r, "mask") for r in rows], [_seed_aps(r, "mask") for r in rows]),
        ("training s/iter", [r["train_s_per_iter"] for r in rows], no_spread),
        ("inference ms/image", [r["inference"]["median_ms"] for r in rows], no_spread),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, (title, values, spreads) in zip(axes.flat, panels):
        for i, (row, value, aps) in enumerate(zip(rows, values, spreads)):
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


def plot_inference_cost(costs: list[dict], path: Path) -> None:
    """One panel per device: RetinaMask ms/image (fastest call, bar up to the median) against
    masked detections, with RetinaNet's and Mask R-CNN's fastest calls as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def write_report(results_dir: Path) -> str:
    """Write the markdown and the plots for the results in ``results_dir``; return the markdown."""
    accuracy, costs = load_results(results_dir)
    if accuracy is None and not costs:
        raise FileNotFoundError(f"no accuracy.json or inference_cost_*.json in {results_dir}")
    text = markdown(accuracy, costs, load_extra_results(results_dir))
    (results_dir / "benchmarks.md").write_text(text, encoding="utf-8")
    if accuracy is not None:
        plot_accuracy(accuracy, results_dir / "accuracy.png")
    if costs:
        plot_inference_cost(costs, results_dir / "inference_cost.png")
    thin = load_thin_objects(results_dir)
    if thin is not None:
        (results_dir / "thin_objects.md").write_text(thin_report.markdown(thin), encoding="utf-8")
        thin_report.plot(thin, results_dir / "thin_objects.png")
    return text


def load_thin_objects(results_dir: Path) -> dict | None:
    """The thin-objects benchmark's results, or None."""
    path = results_dir / "thin_objects.json"
    return json.loads(path.read_text()) if path.is_file() else None


def quickstart_markdown(summary: dict) -> str:
    """The README's quickstart measurement, from a quickstart run's summary.json."""
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


def export_markdown(speed: dict) -> str:
    """The README's table of the exported model's speed, from ``export_speed_cpu.json``."""
    rounds = sorted({row[name]["n"] for row in speed["rows"] for name in ("eager", "onnxruntime")})
    lines = [
        f"{speed['device']}; onnxruntime {speed['onnxruntime']} with the same thread count. "
        f"ms/image: the fastest of {' or '.join(map(str, rounds))} calls per runtime, the "
        "runtimes taking turns on one image; the median in brackets. Random weights set up to "
        "return 100 detections, 50 with masks.",
        "",
        "| model | input | eager | TorchScript | onnxruntime | results against eager's |",
        "|---|---|---|---|---|---|",
    ]
    for row in speed["rows"]:
        cells = [f"{row[n]['ms']:.0f} ({row[n]['median_ms']:.0f})" for n in EXPORT_RUNTIMES]
        checks = "; ".join(
            f"{label}: {_agreement(row[name])}"
            for name, label in (("torchscript", "TorchScript"), ("onnxruntime", "ONNX"))
        )
        height, width = row["input"]
        ties = f"; {row['eager_tied_scores']} tied scores" if row["eager_tied_scores"] else ""
        lines.append(
            f"| {row['model']} | {height}×{width} | {' | '.join(cells)} "
            f"| {row['eager_detections']} eager detections{ties}; {checks} |"
        )
    return "\n".join(lines)


def _agreement(result: dict) -> str:
    text = f"{result['matched_eager']} of {result['detections']} match"
    if result["matched_eager"]:
        text += (
            f" (boxes within {result['max_box_diff_px']:.1g} px, scores within "
            f"{result['max_score_diff']:.1g})"
        )
    return text


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def update_readme(readme: Path, blocks: dict[str, str]) -> None:
    """Replace what stands between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``."""
    text = readme.read_text(encoding="utf-8")
    for name, body in blocks.items():
        start, end = f"<!-- generated:{name} -->", f"<!-- /generated:{name} -->"
        head, found_start, rest = text.partition(start)
        _, found_end, tail = rest.partition(end)
        if not (found_start and found_end):
            raise ValueError(f"{readme} has no {start} ... {end} block")
        text = f"{head}{start}\n{body.strip()}\n{end}{tail}"
    readme.write_text(text, encoding="utf-8")


def readme_blocks(results_dir: Path, section: str) -> dict[str, str]:
    """The generated README blocks: the section without its heading, the quickstart line and
    the exported model's speed."""
    blocks = {"benchmarks": section.split("\n", 1)[1]}
    quickstart = results_dir / "quickstart.json"
    if quickstart.is_file():
        blocks["quickstart"] = quickstart_markdown(json.loads(quickstart.read_text()))
    export_speed = results_dir / "export_speed_cpu.json"
    if export_speed.is_file():
        blocks["export"] = export_markdown(json.loads(export_speed.read_text()))
    thin = load_thin_objects(results_dir)
    if thin is not None:
        blocks["thin_objects"] = thin_report.markdown(thin)
    variants = results_dir / "quickstart_variants.json"
    if variants.is_file():
        blocks["quickstart_variants"] = quickstart_variants_markdown(
            json.loads(variants.read_text())
        )
    return blocks


def quickstart_variants_markdown(result: dict) -> str:
    """Box and mask AP (per class too) of each quickstart variant: seed mean (lowest–highest)."""
    runs: dict[str, list[dict]] = {}
    for run in result["runs"]:
        runs.setdefault(run["variant"], []).append(run)
    classes = sorted(
        {k.split("AP-", 1)[1] for r in result["runs"] for k in r["ap"] if k.startswith("segm/AP-")}
    )

    def cell(rows: list[dict], key: str) -> str:
        values = [r["ap"][key] for r in rows if key in r["ap"]]
        if not values:
            return "–"
        mean = sum(values) / len(values)
        spread = f" ({min(values):.1f}–{max(values):.1f})" if len(values) > 1 else ""
        return f"{mean:.1f}{spread}"

    lines = [
        "| quickstart variant | seeds | box AP | mask AP | "
        + " | ".join(f"mask AP {c}" for c in classes)
        + " |",
        "|---|---|---|---|" + "---|" * len(classes),
    ]
    for name, info in result["variants"].items():
        rows = sorted(runs.get(name, []), key=lambda r: r["seed"])
        if not rows:
            continue
        seeds = ", ".join(str(r["seed"]) for r in rows)
        lines.append(
            f"| {info['description']} | {seeds} | {cell(rows, 'bbox/AP')} | "
            f"{cell(rows, 'segm/AP')} | "
            + " | ".join(cell(rows, f"segm/AP-{c}") for c in classes)
            + " |"
        )
    return "\n".join(lines) + "\n"


def publish(results_dir: Path) -> str:
    """``write_report``; for the committed results also the README's generated blocks."""
    text = write_report(results_dir)
    if results_dir.resolve() == RESULTS_DIR.resolve():
        update_readme(README, readme_blocks(results_dir, text))
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    print(publish(args.results_dir))


if __name__ == "__main__":
    main()
