"""Predictions as COCO results, the format COCOEvaluator writes and the demo's ``--json`` saves."""

from __future__ import annotations

import torch
from detectron2.data.catalog import Metadata
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Instances

from retinamask_d2.data.classes import contiguous_to_dataset_id


def coco_results(
    instances: Instances, image_id: int, file_name: str, metadata: Metadata
) -> list[dict]:
    """COCO results ("bbox" XYWH, "score", "segmentation" RLE) of one image, plus its file name.

    Category ids are the dataset's own when the metadata maps them
    (``thing_dataset_id_to_contiguous_id``, set by detectron2's COCO loader), as COCOEvaluator
    writes them; otherwise the model's contiguous class ids. Instances with ``pred_frames``
    (oriented mask RoIs) also get ``"frame"``: [cx, cy, w, h, angle in degrees], the rotated
    rectangle the mask was predicted in (angle from the x axis towards the y axis, down).
    """
    results = instances_to_coco_json(instances, image_id)
    to_dataset_id = contiguous_to_dataset_id(metadata)
    if results and instances.has("pred_frames"):
        frames = instances.pred_frames.detach().cpu().double()
        frames[:, 4] = torch.rad2deg(frames[:, 4])
        for result, frame in zip(results, frames.tolist(), strict=True):
            result["frame"] = frame
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
