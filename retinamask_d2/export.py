"""RetinaMask as one tensor-in, tensors-out module that TorchScript and ONNX can hold.

``ExportableRetinaMask`` runs the eager model's own inference pieces (``preprocess_image``, the
backbone, ``forward_inference`` with its NMS, the mask branch's pooler and head,
``detector_postprocess``) on one uint8 image and returns plain tensors, masks pasted at the
image's size. It is traced with ``torch.jit.trace`` / ``torch.onnx.export`` directly rather than
through detectron2's ``TracingAdapter``: ``detectron2.export`` imports caffe2 in detectron2 v0.6,
so it cannot be relied on to import, and a module that already takes and returns tensors needs
no adapter. Two steps of the eager path do not trace to a graph that holds for other images (see
:func:`mask_probabilities` and :func:`paste_masks`) and are restated here with the same results.
"""

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from retinamask_d2.modeling.mask_branch import RetinaMaskBranch, _fast_layout
from retinamask_d2.modeling.retinamask import RetinaMask, _with_clipped_boxes

__all__ = [
    "ONNX_OPSET",
    "OUTPUT_NAMES",
    "ExportableRetinaMask",
    "describe",
    "export_onnx",
    "export_torchscript",
    "paste_masks",
]

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "classes", "masks")
# detector_postprocess's default: a pixel belongs to the instance when its probability is >= it.
MASK_THRESHOLD = 0.5
# The lowest opset with GridSample (16) and RoiAlign's half-pixel (aligned) coordinates (16).
ONNX_OPSET = 17


def paste_masks(
    mask_probs: Tensor, boxes: Tensor, height: Tensor | int, width: Tensor | int
) -> Tensor:
    """(N, H, W) bool masks: each (M, M) probability map of ``mask_probs`` (N, 1, M, M)
    resampled bilinearly into its box (N, 4, XYXY) of an H x W image and thresholded.

    The same sampling as detectron2's ``paste_masks_in_image`` (pixel centres, align_corners
    False, zeros outside the M x M map), for all masks in one ``grid_sample`` over the whole
    image (its ``_do_paste_mask`` without the CPU path's cropping to the boxes). Traced,
    ``paste_masks_in_image`` keeps the sample's crop sizes and fails on other boxes, and its ONNX
    export does not load in onnxruntime (a Slice mixing int32 and int64 indices).
    """
    x0, y0, x1, y1 = boxes.split(1, dim=1)  # each (N, 1)
    ys = torch.arange(height, dtype=boxes.dtype, device=boxes.device) + 0.5
    xs = torch.arange(width, dtype=boxes.dtype, device=boxes.device) + 0.5
    ys = (ys - y0) / (y1 - y0) * 2 - 1  # (N, H) in grid_sample's [-1, 1]
    xs = (xs - x0) / (x1 - x0) * 2 - 1  # (N, W)
    grid = torch.stack(
        [
            xs[:, None, :].expand(-1, ys.shape[1], -1),
            ys[:, :, None].expand(-1, -1, xs.shape[1]),
        ],
        dim=3,
    )
    pasted = F.grid_sample(mask_probs, grid.to(mask_probs.dtype), align_corners=False)
    return pasted[:, 0] >= MASK_THRESHOLD


def mask_probabilities(
    branch: RetinaMaskBranch, features: list[Tensor], detections: Instances
) -> Tensor:
    """(N, 1, M, M) mask probabilities of one image's ``detections``: ``branch.predict``, with
    the class's mask picked as ``mask_rcnn_inference`` picks it.

    Not ``branch.predict`` itself: ``mask_rcnn_inference`` splits the masks by a Python count of
    the detections, which tracing records as a constant, so the traced model would fail on
    images with another number of detections.
    """
    pooled = branch.pooler(features, [branch.mask_boxes(detections.pred_boxes)])
    logits = branch.mask_head.layers(_fast_layout(pooled))
    if logits.shape[1] > 1:  # class-specific masks
        classes = detections.pred_classes
        logits = logits[torch.arange(classes.shape[0], device=classes.device), classes][:, None]
    return logits.sigmoid()


class ExportableRetinaMask(nn.Module):
    """The whole inference of a :class:`RetinaMask` from one image tensor.

    Input: ``image``, (H, W, 3) uint8 in the model's ``INPUT.FORMAT`` channel order (as OpenCV
    reads a file for the default "BGR"), at the size the model should see it (resize it as
    ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` say for the trained accuracy). Normalisation and
    padding to the backbone's size divisibility happen inside.

    Outputs, all at the input's size, score-sorted: ``boxes`` (N, 4) float XYXY pixels,
    ``scores`` (N,) float, ``classes`` (N,) int64, ``masks`` (K, H, W) bool for the first K
    detections (the model's ``TEST_TOPK_MASKS`` top ones; the other N - K have no mask, as the
    eager model's empty masks say). These are the eager model's ``pred_boxes``, ``scores``,
    ``pred_classes`` and ``pred_masks[:K]`` for the same image.
    """

    def __init__(self, model: RetinaMask):
        super().__init__()
        if model.training:
            raise ValueError("export a model in eval mode (model.eval())")
        if model.mask_nms_thresh is not None:
            # Its greedy loop runs as many steps as there are detections, which a trace records
            # as the sample's count: the file would give wrong results on other images.
            raise ValueError(
                "mask-IoU NMS (MODEL.RETINAMASK.MASK_NMS.ENABLED) cannot be exported; export with "
                "it off (--opts MODEL.RETINAMASK.MASK_NMS.ENABLED False: duplicates are then "
                "removed by box NMS only) or use the eager predictor"
            )
        if model.mask_branch.frame_head is not None:
            # Pooling and pasting here are in boxes: the file would cut out the wrong pixels.
            raise ValueError(
                "oriented mask RoIs (MODEL.RETINAMASK.MASK_ROI 'oriented') cannot be exported yet; "
                "use the eager predictor"
            )
        self.model = model
        # Exporters restore the training flag they found: keep the wrapper's off like the model's.
        self.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        model = self.model
        chw = image.permute(2, 0, 1).to(model.pixel_mean.dtype)
        images = model.preprocess_image([{"image": chw}])
        all_features = model.backbone(images.tensor)
        features = [all_features[f] for f in model.head_in_features]
        mask_features = [all_features[f] for f in model.mask_branch.in_features]
        (detections,) = model.forward_inference(images, features, model.head(features))
        detections = _with_clipped_boxes(detections)
        height, width = images.image_sizes[0]

        kept = []
        if model.test_topk_masks > 0:
            masked = detections[: model.test_topk_masks]
            # Under its own name the M x M masks follow detector_postprocess's box filtering
            # without being pasted by it.
            masked.mask_probs = mask_probabilities(model.mask_branch, mask_features, masked)
            # Output size = input size: detector_postprocess clips the boxes and drops the
            # empty ones; masks are pasted into their mask boxes (the boxes themselves unless
            # MASK_BOX_SCALE is above 1), unclipped as the eager model pastes them.
            mask_boxes = model.mask_branch.mask_boxes(masked.pred_boxes)
            masked.mask_boxes = Boxes(mask_boxes.tensor.clone())
            masked = detector_postprocess(masked, height, width)
            masks = paste_masks(masked.mask_probs, masked.mask_boxes.tensor, height, width)
            kept.append(masked)
        else:
            masks = torch.zeros((0, height, width), dtype=torch.bool, device=image.device)
        if model.test_topk_masks == 0 or not model.drop_unmasked:
            # The detections beyond the top k, without masks (the eager model's empty ones).
            kept.append(detector_postprocess(detections[model.test_topk_masks :], height, width))
        boxes = torch.cat([k.pred_boxes.tensor for k in kept])
        scores = torch.cat([k.scores for k in kept])
        classes = torch.cat([k.pred_classes for k in kept])
        return boxes, scores, classes, masks


def export_torchscript(
    model: RetinaMask, sample: Tensor, path: str | Path
) -> torch.jit.ScriptModule:
    """Trace :class:`ExportableRetinaMask` of ``model`` on ``sample`` ((H, W, 3) uint8) and save
    it to ``path``; return the traced module.

    Tracing records the sample's control flow; sizes and counts stay symbolic, so the file runs
    on other image sizes and detection counts (the tests check it against the eager model). The
    tracer's warnings about Python values are those very sizes and are silenced; the trace
    checker is off because it reruns on the same sample, which the tests' other sizes supersede.
    """
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(ExportableRetinaMask(model), (sample,), check_trace=False)
    traced.save(str(path))
    return traced


def export_onnx(model: RetinaMask, sample: Tensor, path: str | Path) -> None:
    """Export :class:`ExportableRetinaMask` of ``model``, traced on ``sample``, to ONNX at
    ``path``, with the image's height and width and every output count dynamic.

    The TorchScript-based exporter (``dynamo=False``): it converts torchvision's ``nms`` and
    ``roi_align`` to ONNX's NonMaxSuppression and RoiAlign and keeps data-dependent sizes
    (score thresholding, NMS) symbolic, where ``torch.export`` would need each of them declared.
    The file is then checked with ``onnx.checker`` (types and shapes included).
    """
    dims = {
        INPUT_NAME: {0: "height", 1: "width"},
        "boxes": {0: "detections"},
        "scores": {0: "detections"},
        "classes": {0: "detections"},
        "masks": {0: "masked", 1: "height", 2: "width"},
    }
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            ExportableRetinaMask(model),
            (sample,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dims,
        )
    import onnx  # the export extra; checked here so that a malformed graph fails at export

    onnx.checker.check_model(str(path), full_check=True)


def describe(cfg: CfgNode, model: RetinaMask, format: str, file_name: str) -> dict[str, Any]:
    """What a user of the exported file needs to know without this package: its input and
    outputs, the preprocessing inside it and the resize expected before it, the class names."""
    masked = "masked" if model.test_topk_masks > 0 else 0
    return {
        "file": file_name,
        "format": format,
        "method": "tracing",
        "runs_with": ["torch", "torchvision"] if format == "torchscript" else ["onnxruntime"],
        **({"opset": ONNX_OPSET} if format == "onnx" else {}),
        "inputs": [
            {
                "name": INPUT_NAME,
                "shape": ["height", "width", 3],
                "dtype": "uint8",
                "channel_order": cfg.INPUT.FORMAT,
            }
        ],
        "outputs": [
            {"name": "boxes", "shape": ["detections", 4], "dtype": "float32", "layout": "XYXY"},
            {"name": "scores", "shape": ["detections"], "dtype": "float32"},
            {"name": "classes", "shape": ["detections"], "dtype": "int64"},
            {"name": "masks", "shape": [masked, "height", "width"], "dtype": "bool"},
        ],
        "preprocessing_inside": {
            "normalisation": "(image - pixel_mean) / pixel_std, per channel in channel_order",
            "pixel_mean": [float(v) for v in cfg.MODEL.PIXEL_MEAN],
            "pixel_std": [float(v) for v in cfg.MODEL.PIXEL_STD],
            "pad_to_multiple_of": int(model.backbone.size_divisibility),
        },
        "resize_before": {
            "shortest_edge": int(cfg.INPUT.MIN_SIZE_TEST),
            "max_size": int(cfg.INPUT.MAX_SIZE_TEST),
            "interpolation": "bilinear",
        },
        "postprocessing_inside": {
            "score_threshold": float(model.test_score_thresh),
            "candidates_per_level": int(model.test_topk_candidates),
            "nms_threshold": float(model.test_nms_thresh),
            "max_detections": int(model.max_detections_per_image),
            "masks_for_top": int(model.test_topk_masks),
            "drop_unmasked": bool(model.drop_unmasked),
            "mask_threshold": MASK_THRESHOLD,
        },
        "class_names": list(cfg.MODEL.RETINAMASK.CLASS_NAMES),
    }
