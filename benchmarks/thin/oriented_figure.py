"""The README's picture of thin objects: the same tilted objects cut out by RetinaMask with box
mask RoIs and with oriented mask RoIs, side by side (``docs/images/thin_cutouts.png``).

    python -m benchmarks.thin.oriented --seeds 0        # trains the two models (and the peers)
    python -m benchmarks.thin.oriented_figure           # writes the picture

The models are those ``benchmarks.thin.oriented`` trained for ``--seed``; the objects are the
first ``--rows`` thin objects of the validation set (file order) tilted 15–40° from the nearest
axis that both models found (a detection of their class with box IoU >= 0.5). Each row shows the
object's region of the image, then each model's upright cut-out (``make_cutouts(upright=True)``,
as the demo's ``--cutouts --upright`` writes it) with its mask IoU. Nothing is picked by result.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
from detectron2.data import MetadataCatalog
from PIL import Image, ImageDraw

from benchmarks.harness import ROOT
from benchmarks.thin.object_metrics import axis_angle, best_box_match, to_rle
from benchmarks.thin.oriented import DATA_NAME, SPEC, build_cfg, thin_category_ids
from benchmarks.training import register
from retinamask_d2.data.image_io import read_image
from retinamask_d2.predictor import RetinaMaskPredictor
from retinamask_d2.visualization.cutouts import make_cutouts

MODELS = {"retinamask_box": "box mask RoIs", "retinamask_oriented": "oriented mask RoIs"}
ANGLES = (15.0, 40.0)
CELL = (240, 96)  # each picture's box in the figure, px
GAP, LABEL = 6, 16


def _fit(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` scaled to fit ``size`` (square pixels, no smoothing: the mask's pixels show)."""
    factor = min(size[0] / image.width, size[1] / image.height, 4.0)
    scaled = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(scaled, Image.Resampling.NEAREST)


def _on_checkerboard(rgba: np.ndarray) -> Image.Image:
    cutout = Image.fromarray(rgba, "RGBA")
    board = Image.new("RGB", cutout.size, (255, 255, 255))
    for y in range(0, cutout.height, 4):
        for x in range((y // 4 % 2) * 4, cutout.width, 8):
            board.paste((214, 214, 214), (x, y, x + 4, y + 4))
    board.paste(cutout, (0, 0), cutout)
    return board


def _best(instances, annotation: dict) -> int | None:
    """Index of the detection of the object's class that the benchmark matches to it."""
    same = (instances.pred_classes.numpy() == annotation["category_id"] - 1).nonzero()[0]
    boxes = instances.pred_boxes.tensor.numpy()[same]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
    best = best_box_match(xywh.tolist(), annotation["bbox"])
    return None if best is None else int(same[best])


def collect_rows(
    predictors: dict, gt: dict, images_dir: Path, rows: int
) -> list[tuple[Image.Image, list[tuple[np.ndarray, float]]]]:
    """(object region, [(upright cut-out RGBA, mask IoU) per model]) for the chosen objects."""
    thin_ids = thin_category_ids(gt)
    by_image: dict[int, list[dict]] = {}
    for ann in gt["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    chosen = []
    for image in gt["images"]:
        candidates = [
            a
            for a in by_image.get(image["id"], [])
            if a["category_id"] in thin_ids
            and ANGLES[0] <= axis_angle(a, image["height"], image["width"]) <= ANGLES[1]
        ]
        if not candidates:
            continue
        rgb = read_image(str(images_dir / image["file_name"]), format="RGB")
        outputs = {name: p.predict(rgb, format="RGB") for name, p in predictors.items()}
        for ann in candidates:
            found = {n: _best(o, ann) for n, o in outputs.items()}
            if any(i is None for i in found.values()):
                continue
            gt_mask = mask_util.decode(to_rle(ann["segmentation"], image["height"], image["width"]))
            cells = []
            for name, index in found.items():
                instance = outputs[name][index : index + 1]
                mask = instance.pred_masks[0].numpy()
                iou = float((mask & (gt_mask > 0)).sum()) / max(
                    float((mask | (gt_mask > 0)).sum()), 1
                )
                (cutout,) = make_cutouts(rgb, instance, predictors[name].metadata, upright=True)
                cells.append((cutout.rgba, iou))
            x, y, w, h = ann["bbox"]
            pad = 6
            region = rgb[
                max(int(y) - pad, 0) : int(y + h) + pad, max(int(x) - pad, 0) : int(x + w) + pad
            ]
            chosen.append((Image.fromarray(np.ascontiguousarray(region)), cells))
            if len(chosen) == rows:
                return chosen
    return chosen


def figure(chosen: list, titles: list[str]) -> Image.Image:
    columns = 1 + len(titles)
    width = columns * CELL[0] + (columns - 1) * GAP
    height = LABEL + len(chosen) * (CELL[1] + LABEL + GAP)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(["the object in its image", *titles]):
        draw.text((c * (CELL[0] + GAP) + 2, 2), title, fill=(0, 0, 0))
    for r, (region, cells) in enumerate(chosen):
        top = LABEL + r * (CELL[1] + LABEL + GAP)
        pictures = [(_fit(region, CELL), "")] + [
            (_fit(_on_checkerboard(rgba), CELL), f"mask IoU {iou:.2f}") for rgba, iou in cells
        ]
        for c, (picture, label) in enumerate(pictures):
            left = c * (CELL[0] + GAP)
            canvas.paste(picture, (left, top + (CELL[1] - picture.height) // 2))
            draw.text((left + 2, top + CELL[1] + 2), label, fill=(0, 0, 0))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=Path("datasets/thin_readable"))
    parser.add_argument("--work-dir", type=Path, default=Path("output/benchmarks/thin_oriented"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "thin_cutouts.png")
    args = parser.parse_args()
    register(args.data_dir, DATA_NAME)
    predictors = {}
    for name in MODELS:
        run_dir = args.work_dir / f"seed{args.seed}" / name
        cfg = build_cfg(name, SPEC, args.data_dir, run_dir, "cpu")
        cfg.MODEL.WEIGHTS = str(run_dir / "model_final.pth")
        cfg.DATASETS.TEST = (f"{DATA_NAME}_val",)  # the class names of the data
        predictors[name] = RetinaMaskPredictor(cfg)
        predictors[name].metadata = MetadataCatalog.get(f"{DATA_NAME}_val")
    gt = json.loads((args.data_dir / "val.json").read_text())
    chosen = collect_rows(predictors, gt, args.data_dir / "val", args.rows)
    if not chosen:
        raise SystemExit("error: no tilted thin object was found by both models")
    picture = figure(chosen, [f"RetinaMask, {title}" for title in MODELS.values()])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    picture.quantize(colors=256).save(args.out, optimize=True)
    print(f"wrote {args.out}: {len(chosen)} objects")


if __name__ == "__main__":
    main()
