"""RetinaMask as one tensor-in, tensors-out module that TorchScript and ONNX can hold.

``ExportableRetinaMask`` runs the eager model's own inference (``preprocess_image`` and
:meth:`RetinaMask.detect`: backbone, ``forward_inference`` with its NMS, the choice of the
detections that get masks, the mask branch's prediction and paste) on one uint8 image and returns
plain tensors, masks pasted at the image's size: every inference setting of the model reaches the
file as it reaches the eager model. The two steps that a trace would freeze to the sample's
counts and sizes switch to their trace-safe twins themselves while tracing (see
``RetinaMaskBranch.predict`` and ``RetinaMaskBranch.paste``). It is traced with
``torch.jit.trace`` / ``torch.onnx.export`` directly rather than through detectron2's
``TracingAdapter``: ``detectron2.export`` imports caffe2 in detectron2 v0.6, so it cannot be
relied on to import, and a module that already takes and returns tensors needs no adapter.
"""

import warnings
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode
from torch import Tensor, nn

from retinamask_d2.modeling import RetinaMask
from retinamask_d2.modeling.mask_branch import MASK_THRESHOLD

__all__ = [
    "FRAMES_OUTPUT",
    "ONNX_OPSET",
    "OUTPUT_NAMES",
    "ExportableRetinaMask",
    "describe",
    "export_onnx",
    "export_torchscript",
    "inference_settings",
    "output_names",
]

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "classes", "masks")
# The fifth output of a model with oriented mask RoIs that predicts masks (see output_names).
FRAMES_OUTPUT = "frames"
# The lowest opset with GridSample (16) and RoiAlign's half-pixel (aligned) coordinates (16).
ONNX_OPSET = 17


class ExportableRetinaMask(nn.Module):
    """The whole inference of a :class:`RetinaMask` from one image tensor.

    Input: ``image``, (H, W, 3) uint8 in the model's ``INPUT.FORMAT`` channel order (as OpenCV
    reads a file for the default "BGR"), at the size the model should see it (resize it as
    ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` say for the trained accuracy). Normalisation and
    padding to the backbone's size divisibility happen inside.

    Outputs, all at the input's size, score-sorted: ``boxes`` (N, 4) float XYXY pixels,
    ``scores`` (N,) float, ``classes`` (N,) int64, ``masks`` (K, H, W) bool for the first K
    detections (the model's top ``TEST_TOPK_MASKS`` that score at least
    ``TEST_MASK_SCORE_THRESH``; the other N - K have no mask, as the eager model's empty masks
    say). These are the eager model's ``pred_boxes``, ``scores``, ``pred_classes`` and
    ``pred_masks[:K]`` for the same image: both come from :meth:`RetinaMask.detect`. A model
    with oriented mask RoIs (``MASK_ROI: "oriented"``, ``TEST_TOPK_MASKS`` > 0) has a fifth
    output, ``frames`` (N, 5) float: the eager model's ``pred_frames`` (see
    :func:`output_names`).
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
        self.model = model
        # Exporters restore the training flag they found: keep the wrapper's off like the model's.
        self.eval()

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        model = self.model
        chw = image.permute(2, 0, 1).to(model.pixel_mean.dtype)
        images = model.preprocess_image([{"image": chw}])
        ((masked, unmasked),) = model.detect(images, images.image_sizes)
        kept = [part for part in (masked, unmasked) if part is not None]
        boxes = torch.cat([k.pred_boxes.tensor for k in kept])
        scores = torch.cat([k.scores for k in kept])
        classes = torch.cat([k.pred_classes for k in kept])
        if masked is None:  # box-only inference
            height, width = images.image_sizes[0]
            return boxes, scores, classes, image.new_zeros((0, height, width), dtype=torch.bool)
        if masked.has("pred_frames"):  # oriented mask RoIs: every part has them
            frames = torch.cat([k.pred_frames for k in kept])
            return boxes, scores, classes, masked.pred_masks, frames
        return boxes, scores, classes, masked.pred_masks


def output_names(model: RetinaMask) -> tuple[str, ...]:
    """The exported file's outputs, in order: :data:`OUTPUT_NAMES`, then :data:`FRAMES_OUTPUT`
    for a model with oriented mask RoIs that predicts masks (the eager model's ``pred_frames``:
    (N, 5) cx, cy, w, h, theta at the input's size)."""
    if model.mask_branch.frame_head is not None and model.test_topk_masks > 0:
        return (*OUTPUT_NAMES, FRAMES_OUTPUT)
    return OUTPUT_NAMES


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
    names = output_names(model)
    dims = {
        INPUT_NAME: {0: "height", 1: "width"},
        "boxes": {0: "detections"},
        "scores": {0: "detections"},
        "classes": {0: "detections"},
        "masks": {0: "masked", 1: "height", 2: "width"},
    }
    if FRAMES_OUTPUT in names:
        dims[FRAMES_OUTPUT] = {0: "detections"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            ExportableRetinaMask(model),
            (sample,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=list(names),
            dynamic_axes=dims,
        )
    import onnx  # the export extra; checked here so that a malformed graph fails at export

    onnx.checker.check_model(str(path), full_check=True)


def inference_settings(model: RetinaMask) -> dict[str, Any]:
    """The config keys that shape ``model``'s inference, with the values the model holds (and
    an exported file keeps): what changes its results after the weights."""
    pooler = model.mask_branch.pooler
    return {
        "MODEL.RETINANET.SCORE_THRESH_TEST": float(model.test_score_thresh),
        "MODEL.RETINANET.TOPK_CANDIDATES_TEST": int(model.test_topk_candidates),
        "MODEL.RETINANET.NMS_THRESH_TEST": float(model.test_nms_thresh),
        "MODEL.RETINANET.BBOX_REG_WEIGHTS": [float(w) for w in model.box2box_transform.weights],
        "TEST.DETECTIONS_PER_IMAGE": int(model.max_detections_per_image),
        "MODEL.RETINAMASK.TEST_TOPK_MASKS": int(model.test_topk_masks),
        "MODEL.RETINAMASK.TEST_MASK_SCORE_THRESH": float(model.mask_score_thresh),
        "MODEL.RETINAMASK.DROP_UNMASKED": bool(model.drop_unmasked),
        "MODEL.RETINAMASK.CLASS_AGNOSTIC_NMS": bool(model.class_agnostic_nms),
        "MODEL.RETINAMASK.MASK_NMS.ENABLED": model.mask_nms_thresh is not None,
        "MODEL.RETINAMASK.MASK_BOX_SCALE": float(model.mask_branch.box_scale),
        "MODEL.RETINAMASK.MASK_IN_FEATURES": list(model.mask_branch.in_features),
        "MODEL.RETINAMASK.CANONICAL_BOX_SIZE": int(pooler.canonical_box_size),
        "MODEL.RETINAMASK.CANONICAL_LEVEL": int(pooler.canonical_level),
    }


def describe(cfg: CfgNode, model: RetinaMask, format: str, file_name: str) -> dict[str, Any]:
    """What a user of the exported file needs to know without this package: its input and
    outputs, the preprocessing inside it and the resize expected before it, the inference
    settings it holds (:func:`inference_settings`), the class names."""
    masked = "masked" if model.test_topk_masks > 0 else 0
    outputs = [
        {"name": "boxes", "shape": ["detections", 4], "dtype": "float32", "layout": "XYXY"},
        {"name": "scores", "shape": ["detections"], "dtype": "float32"},
        {"name": "classes", "shape": ["detections"], "dtype": "int64"},
        {"name": "masks", "shape": [masked, "height", "width"], "dtype": "bool"},
    ]
    if FRAMES_OUTPUT in output_names(model):
        outputs.append(
            {
                "name": FRAMES_OUTPUT,
                "shape": ["detections", 5],
                "dtype": "float32",
                "layout": "cx, cy, w, h, theta: rotated rectangles in pixels, w >= h, theta in "
                "radians in [-pi/2, pi/2) from the x axis towards the y axis (down)",
            }
        )
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
        "outputs": outputs,
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
            "masks_for": "the first detections: the top TEST_TOPK_MASKS scoring at least "
            "TEST_MASK_SCORE_THRESH",
            "mask_threshold": MASK_THRESHOLD,
            "settings": inference_settings(model),
        },
        "class_names": list(cfg.MODEL.RETINAMASK.CLASS_NAMES),
    }
