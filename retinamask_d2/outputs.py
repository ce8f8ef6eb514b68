"""What the demo makes of one image's predictions: a drawing, COCO results and RGBA cut-outs.

All functions take the image as an (H, W, 3) uint8 RGB array and detectron2 ``Instances`` on the
CPU at that image's size (``pred_boxes``, ``scores``, ``pred_classes``, ``pred_masks``), as
``RetinaMaskPredictor`` returns them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer


def draw_instances(
    image_rgb: np.ndarray, instances: Instances, metadata: Metadata, min_long_side: int = 512
) -> np.ndarray:
    """The image with masks, boxes, class names and scores drawn on it (RGB uint8).

    An image whose long side is under ``min_long_side`` is drawn enlarged by the smallest whole
    factor that reaches it (128 px: 4x): at its own size, the labels would cover the objects.
    """
    scale = max(1, math.ceil(min_long_side / max(image_rgb.shape[:2])))
    visualizer = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    return visualizer.draw_instance_predictions(instances).get_image()


def coco_results(
    instances: Instances, image_id: int, file_name: str, metadata: Metadata
) -> list[dict]:
    """COCO results ("bbox" XYWH, "score", "segmentation" RLE) of one image, plus its file name.

    Category ids are the dataset's own when the metadata maps them
    (``thing_dataset_id_to_contiguous_id``, set by detectron2's COCO loader), as COCOEvaluator
    writes them; otherwise the model's contiguous class ids.
    """
    results = instances_to_coco_json(instances, image_id)
    to_dataset_id = _contiguous_to_dataset_id(metadata)
    for result in results:
        if to_dataset_id is not None:
            class_id = result["category_id"]
            if class_id not in to_dataset_id:
                raise ValueError(
                    f"predicted class {class_id} has no dataset category id in the metadata of "
                    f"{metadata.get('name', 'this dataset')} (thing_dataset_id_to_contiguous_id)"
                )
            result["category_id"] = to_dataset_id[class_id]
        result["file_name"] = file_name
    return results


def _contiguous_to_dataset_id(metadata: Metadata) -> dict[int, int] | None:
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    return None if mapping is None else {v: k for k, v in mapping.items()}


@dataclass
class Cutout:
    """One instance cut out of its image: the mask's bounding box, alpha 0 outside the mask."""

    index: int  # position of the instance in the image's predictions (score order)
    class_name: str
    score: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the mask in the image
    rgba: np.ndarray  # (y1 - y0, x1 - x0, 4) uint8

    def file_name(self, prefix: str) -> str:
        """``<prefix>_<index>_<class>_<score>.png``, the class reduced to file-safe characters."""
        safe_class = re.sub(r"[^A-Za-z0-9.+-]+", "-", self.class_name).strip("-.") or "class"
        return f"{prefix}_{self.index:03d}_{safe_class}_{self.score:.3f}.png"


def make_cutouts(image_rgb: np.ndarray, instances: Instances, metadata: Metadata) -> list[Cutout]:
    """One RGBA cut-out per instance whose mask has any pixel (empty masks give none).

    The RGB of pixels outside the mask is zeroed as well as their alpha, so nothing of the
    background remains in the file.
    """
    masks = np.asarray(instances.pred_masks, dtype=bool)
    classes = instances.pred_classes.tolist()
    scores = instances.scores.tolist()
    cutouts = []
    for index, (mask, class_id, score) in enumerate(zip(masks, classes, scores)):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows) == 0:
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        crop_mask = mask[y0:y1, x0:x1]
        rgba = np.zeros((y1 - y0, x1 - x0, 4), dtype=np.uint8)
        rgba[crop_mask, :3] = image_rgb[y0:y1, x0:x1][crop_mask]
        rgba[crop_mask, 3] = 255
        box = (int(x0), int(y0), int(x1), int(y1))
        cutouts.append(Cutout(index, class_name(metadata, class_id), score, box, rgba))
    return cutouts


def class_name(metadata: Metadata, class_id: int) -> str:
    """The class's name from ``thing_classes``, or ``class<id>`` when the metadata has none."""
    names = metadata.get("thing_classes", None)
    if names is not None and 0 <= class_id < len(names):
        return str(names[class_id])
    return f"class{class_id}"
