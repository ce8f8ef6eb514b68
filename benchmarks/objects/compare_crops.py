"""Does cutting an object out help to re-find it? Recall@1/5 and mAP of each embedder on each crop
mode, over scenes of objects with identities (``benchmarks/objects/identity_scenes.py``), with
ground-truth masks, with masks eroded or dilated by 1-3 px (the segmentation errors a model
makes) and with a trained model's masks.

    python -m benchmarks.objects.compare_crops                 # ~5 min on 2 CPU cores
    python -m benchmarks.objects.compare_crops --quick         # seconds, results not kept

Every object is a query against all the others (leave-one-out); the relevant ones are the other
views of its identity. Intervals are 95% bootstrap intervals over queries; the box-vs-cut-out
comparisons are paired (same queries, same embedder, only the crop differs), with a sign-flip
permutation p-value. Writes ``benchmarks/results/object_comparison.json``, a gallery PNG and
the table in ``docs/comparing_objects.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from benchmarks.harness import RESULTS_DIR
from benchmarks.objects.identity_scenes import make_identities, make_views
from retinamask_d2.predictor import RetinaMaskPredictor, load_config
from retinamask_d2.similarity.crops import CROP_MODES, crop_object
from retinamask_d2.similarity.embedders import build_embedder

RESULTS = RESULTS_DIR / "object_comparison.json"
DOC = Path(__file__).resolve().parents[2] / "docs" / "comparing_objects.md"
MARKERS = ("<!-- object-comparison:begin -->", "<!-- object-comparison:end -->")
TILT_BINS = ((0, 10), (10, 30), (30, 45.01))
MASK_CHANGES = (-3, -2, -1, 1, 2, 3)  # px: negative erodes, positive dilates
BOOTSTRAP = 2000
MATCH_IOU = 0.5  # a predicted mask is the object's when it overlaps it this much


def changed_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``mask`` eroded (negative ``pixels``) or dilated by a (2|p|+1)-px square; an erosion
    that would empty it keeps the original."""
    if pixels == 0:
        return mask
    kernel = np.ones((2 * abs(pixels) + 1,) * 2, np.uint8)
    operation = cv2.dilate if pixels > 0 else cv2.erode
    changed = operation(mask.astype(np.uint8), kernel) > 0
    return changed if changed.any() else mask


def retrieval(embeddings: np.ndarray, identities: np.ndarray) -> dict[str, np.ndarray]:
    """Per query: hit at 1, hit within 5, average precision (leave-one-out)."""
    similarity = embeddings @ embeddings.T
    np.fill_diagonal(similarity, -np.inf)
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :-1]  # the query itself last
    relevant = identities[order] == identities[:, None]
    ranks = np.arange(1, relevant.shape[1] + 1)
    precision = np.cumsum(relevant, axis=1) / ranks
    ap = (precision * relevant).sum(1) / np.maximum(relevant.sum(1), 1)
    return {
        "r1": relevant[:, 0].astype(float),
        "r5": relevant[:, :5].any(1).astype(float),
        "ap": ap,
    }


def interval(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    """Mean and 95% bootstrap interval."""
    if len(values) == 0:
        return [float("nan")] * 3
    means = rng.choice(values, (BOOTSTRAP, len(values))).mean(1)
    return [float(values.mean()), *map(float, np.percentile(means, [2.5, 97.5]))]


def paired(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> dict:
    """Mean of b - a with its bootstrap interval, and a two-sided sign-flip permutation p."""
    diff = b - a
    flips = rng.choice([-1.0, 1.0], (BOOTSTRAP, len(diff)))
    null = np.abs((flips * diff).mean(1))
    p = float((np.sum(null >= abs(diff.mean()) - 1e-12) + 1) / (BOOTSTRAP + 1))
    return {"difference": interval(diff, rng), "p": p}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--thin", type=int, default=40, help="thin identities")
    parser.add_argument("--compact", type=int, default=20, help="compact identities")
    parser.add_argument("--views", type=int, default=4, help="images per identity")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedders", nargs="+", default=["handcrafted", "pretrained"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="a trained model (config.yaml, model_final.pth): adds its masks",
    )
    parser.add_argument("--quick", action="store_true", help="6 identities, no file written")
    parser.add_argument("--publish", action="store_true", help="only rewrite the doc's table")
    args = parser.parse_args()
    if args.publish:
        publish(json.loads(RESULTS.read_text()))
        return
    torch.set_num_threads(args.threads)
    if args.quick:
        args.thin, args.compact, args.views = 4, 2, 3
    start = time.perf_counter()
    identities = make_identities(args.thin, args.compact, args.seed)
    views = make_views(identities, args.views, args.seed + 1)
    labels = np.array([v.identity for v in views])
    kinds = np.array([identities[v.identity].kind for v in views])
    tilts = np.array([v.tilt for v in views])
    rng = np.random.default_rng(args.seed)

    groups = {"all": np.ones(len(views), bool), "thin": kinds == "thin"}
    groups["compact"] = kinds == "compact"
    groups["thin, tilt > 20°"] = (kinds == "thin") & (tilts > 20)
    for low, high in TILT_BINS:
        groups[f"thin, tilt {low:g}-{min(high, 45):g}°"] = (
            (kinds == "thin") & (tilts >= low) & (tilts < high)
        )

    # Mask conditions: (name, masks, boxes, which objects take part).
    everyone = np.ones(len(views), bool)
    conditions = [("gt", [v.mask for v in views], [v.box for v in views], everyone)]
    conditions += [
        (f"{p:+d}px", [changed_mask(v.mask, p) for v in views], [v.box for v in views], everyone)
        for p in MASK_CHANGES
    ]
    detection_rate = None
    if args.model_dir is not None:
        masks, boxes, found, maskpool = predicted_objects(views, args.model_dir)
        conditions.append(("predicted", masks, boxes, found))
        detection_rate = float(found.mean())

    per_query: dict[str, dict[str, np.ndarray]] = {}
    rows = []

    def record(embedder_name: str, mode: str, condition: str, chosen, scores) -> None:
        per_query[f"{embedder_name}|{mode}|{condition}"] = scores
        for group, members in groups.items():
            rows.append(
                {
                    "embedder": embedder_name,
                    "crop": mode,
                    "masks": condition,
                    "objects": group,
                    "queries": int(members[chosen].sum()),
                    **{m: interval(scores[m][members[chosen]], rng) for m in ("r1", "r5", "ap")},
                }
            )

    if args.model_dir is not None:  # the detector's own features under its masks: no crop
        chosen = np.flatnonzero(found)
        record("maskpool", "mask", "predicted", chosen, retrieval(maskpool[chosen], labels[chosen]))
    for embedder_name in args.embedders:
        embedder = build_embedder(embedder_name)
        for mode in CROP_MODES:
            for condition, masks, boxes, taking_part in conditions:
                if condition.endswith("px") and mode.startswith("box"):
                    continue  # box crops do not read the mask
                chosen = np.flatnonzero(taking_part)
                crops = [crop_object(views[i].image, masks[i], boxes[i], mode) for i in chosen]
                scores = retrieval(embedder.embed(crops, mode == "upright"), labels[chosen])
                record(embedder_name, mode, condition, chosen, scores)
    comparisons = []
    for embedder_name in args.embedders:
        for condition, _, _, taking_part in conditions:
            if condition.endswith("px"):
                continue
            for mode in ("mask", "upright"):
                for group in ("all", "thin, tilt > 20°", "compact"):
                    members = groups[group][np.flatnonzero(taking_part)]
                    base = per_query[f"{embedder_name}|box|{condition}"]["r1"][members]
                    cut = per_query[f"{embedder_name}|{mode}|{condition}"]["r1"][members]
                    comparisons.append(
                        {
                            "embedder": embedder_name,
                            "masks": condition,
                            "box_vs": mode,
                            "objects": group,
                            "r1": paired(base, cut, rng),
                        }
                    )
    result = {
        "setting": {
            "identities": {"thin": args.thin, "compact": args.compact},
            "views_per_identity": args.views,
            "image_size": 192,
            "seed": args.seed,
            "masks": "ground truth, and eroded (-) / dilated (+) by a square of 2|p|+1 px",
            "bootstrap": BOOTSTRAP,
            "model": str(args.model_dir) if args.model_dir else None,
            "detection_rate": detection_rate,
        },
        "rows": rows,
        "paired_box_vs_cutout": comparisons,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if args.quick:
        print(json.dumps(comparisons, indent=1))
        return
    RESULTS.write_text(json.dumps(result, indent=1))
    write_gallery(views, per_query, args.embedders[0], RESULTS.with_suffix(".png"))
    publish(result)
    print(f"wrote {RESULTS} in {result['seconds']} s")


def predicted_objects(views, model_dir: Path) -> tuple[list, list, np.ndarray, np.ndarray]:
    """The model's mask, box and maskpool embedding for each view's object: its detection whose
    mask overlaps the object's best, found when that IoU is at least 0.5 (the others take no
    part)."""
    opts = ["MODEL.RETINAMASK.TEST_EMBEDDINGS", "True"]
    predictor = RetinaMaskPredictor(
        load_config(model_dir / "config.yaml", model_dir / "model_final.pth", opts),
        confidence_threshold=0.05,
    )
    masks, boxes, found, embeddings = [], [], [], []
    for view in views:
        instances = predictor.predict(view.image, format="RGB")
        predicted = np.asarray(instances.pred_masks, dtype=bool)
        inter = (predicted & view.mask).reshape(len(predicted), -1).sum(1)
        union = (predicted | view.mask).reshape(len(predicted), -1).sum(1)
        iou = inter / np.maximum(union, 1)
        best = int(np.argmax(iou)) if len(iou) else -1
        hit = best >= 0 and iou[best] >= MATCH_IOU
        masks.append(predicted[best] if hit else view.mask)
        boxes.append(instances.pred_boxes.tensor[best].tolist() if hit else view.box)
        found.append(hit)
        channels = instances.pred_embeddings.shape[1]
        embeddings.append(instances.pred_embeddings[best] if hit else torch.zeros(channels))
    return masks, boxes, np.array(found), torch.stack(embeddings).numpy()


def write_gallery(views, per_query, embedder_name: str, path: Path) -> None:
    """For three thin tilted queries: the query (blue frame) and its 4 nearest neighbours with
    box crops (top row) and upright cut-outs (bottom row); green frames the same identity, red
    another."""
    embedder = build_embedder(embedder_name)
    labels = np.array([v.identity for v in views])
    thin = [i for i, v in enumerate(views) if v.tilt > 20 and v.elongation > 5][:3]
    lines = []
    for query in thin:
        for mode in ("box", "upright"):
            crops = [crop_object(v.image, v.mask, v.box, mode) for v in views]
            vectors = embedder.embed(crops, mode == "upright")
            similarity = vectors @ vectors[query]
            similarity[query] = -np.inf
            order = [query, *np.argsort(-similarity)[:4]]
            tiles = []
            for rank, i in enumerate(order):
                tile = np.full((96, 96, 3), 255, np.uint8)
                rgb = crops[i].rgb
                scale = 88 / max(rgb.shape[:2])
                small = cv2.resize(
                    rgb, (max(1, int(rgb.shape[1] * scale)), max(1, int(rgb.shape[0] * scale)))
                )
                top, left = (96 - small.shape[0]) // 2, (96 - small.shape[1]) // 2
                tile[top : top + small.shape[0], left : left + small.shape[1]] = small
                colour = (
                    (0, 0, 255)
                    if rank == 0
                    else ((0, 170, 0) if labels[i] == labels[query] else (220, 0, 0))
                )
                cv2.rectangle(tile, (0, 0), (95, 95), colour, 3)
                tiles.append(tile)
            lines.append(np.concatenate(tiles, axis=1))
    picture = np.concatenate(lines, axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))


def table(result: dict) -> str:
    """The markdown tables of docs/comparing_objects.md: recall@1 (95% interval) and mAP per
    embedder, mask source and crop mode, for all objects, thin tilted (> 20°) and compact ones;
    the paired box-vs-cut-out differences; recall@1 under mask errors."""
    groups = ("all", "thin, tilt > 20°", "compact")
    lines = [
        "| embedder | masks | crop | " + " | ".join(f"R@1 {g}" for g in groups) + " | mAP all |",
        "|---|---|---|" + "---|" * (len(groups) + 1),
    ]
    index = {(r["embedder"], r["crop"], r["masks"], r["objects"]): r for r in result["rows"]}
    masks = [m for m in ("gt", "predicted") if any(r["masks"] == m for r in result["rows"])]
    for embedder in dict.fromkeys(r["embedder"] for r in result["rows"]):
        for condition in masks:
            for crop in CROP_MODES:
                if (embedder, crop, condition, "all") not in index:
                    continue
                cells = []
                for group in groups:
                    mean, low, high = index[(embedder, crop, condition, group)]["r1"]
                    cells.append(f"{mean:.2f} ({low:.2f}–{high:.2f})")
                ap = index[(embedder, crop, condition, "all")]["ap"][0]
                lines.append(
                    f"| {embedder} | {condition} | {crop} | " + " | ".join(cells) + f" | {ap:.2f} |"
                )
    lines += ["", "Paired, recall@1 of the cut-out minus that of the box crop (same queries):", ""]
    lines += [
        "| embedder | masks | cut-out | objects | difference (95% interval) | p |",
        "|---|---|---|---|---|---|",
    ]
    for c in result["paired_box_vs_cutout"]:
        mean, low, high = c["r1"]["difference"]
        lines.append(
            f"| {c['embedder']} | {c['masks']} | {c['box_vs']} | {c['objects']} | "
            f"{mean:+.2f} ({low:+.2f} to {high:+.2f}) | {c['r1']['p']:.4f} |"
        )
    lines += [
        "",
        "Recall@1 with masks eroded (−) or dilated (+), upright cut-outs, thin tilted > 20°:",
        "",
    ]
    changes = ["gt"] + [f"{p:+d}px" for p in (-3, -2, -1, 1, 2, 3)]
    lines += ["| embedder | " + " | ".join(changes) + " |", "|---|" + "---|" * len(changes)]
    for embedder in dict.fromkeys(r["embedder"] for r in result["rows"]):
        if (embedder, "upright", "gt", "all") not in index:
            continue  # maskpool: the model's masks only
        cells = [
            f"{index[(embedder, 'upright', c, 'thin, tilt > 20°')]['r1'][0]:.2f}" for c in changes
        ]
        lines.append(f"| {embedder} | " + " | ".join(cells) + " |")
    setting = result["setting"]
    lines += [
        "",
        f"{setting['identities']['thin']} thin and {setting['identities']['compact']} compact "
        f"identities, {setting['views_per_identity']} views each, {setting['image_size']} px, "
        f"seed {setting['seed']}; generated by `python -m benchmarks.objects.compare_crops`."
        + (
            f" Predicted masks: {setting['model']}, which found {setting['detection_rate']:.0%} "
            "of the objects (mask IoU >= 0.5); only those take part in the predicted rows."
            if setting.get("model")
            else ""
        ),
    ]
    return "\n".join(lines)


def publish(result: dict) -> None:
    """Replace the generated block of ``docs/comparing_objects.md`` with the table."""
    text = DOC.read_text()
    begin, end = MARKERS
    head, rest = text.split(begin)
    _, tail = rest.split(end)
    DOC.write_text(f"{head}{begin}\n{table(result)}\n{end}{tail}")


if __name__ == "__main__":
    main()
