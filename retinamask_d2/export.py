"""RetinaMask as one tensor-in, tensors-out module that TorchScript and ONNX can hold.

``ExportableRetinaMask`` runs the eager model's own inference pieces (``preprocess_image``, the
backbone, ``forward_inference`` with its NMS, ``predict_masks``, ``detector_postprocess``) on one
uint8 image and returns plain tensors, masks pasted at the image's size. detectron2's
``TracingAdapter`` would flatten the same outputs, but ``detectron2.export`` imports caffe2 in
detectron2 v0.6 and so cannot be relied on to import; and the eager model's own pasting
(``paste_masks_in_image``) is scripted under tracing, with a per-box loop that the ONNX exporter
cannot turn into a graph, so the pasting here is :func:`paste_masks`, one grid_sample for all
masks (detectron2's ``_do_paste_mask`` without its CPU-only cropping).
"""

import torch
import torch.nn.functional as F
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from torch import Tensor, nn

from retinamask_d2.modeling.retinamask import RetinaMask, _with_clipped_boxes

__all__ = ["OUTPUT_NAMES", "ExportableRetinaMask", "paste_masks"]

INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "classes", "masks")
# detector_postprocess's default: a pixel belongs to the instance when its probability is >= it.
MASK_THRESHOLD = 0.5


def paste_masks(
    mask_probs: Tensor, boxes: Tensor, height: Tensor | int, width: Tensor | int
) -> Tensor:
    """(N, H, W) bool masks: each (M, M) probability map of ``mask_probs`` (N, 1, M, M)
    resampled bilinearly into its box (N, 4, XYXY) of an H x W image and thresholded.

    The same sampling as detectron2's ``paste_masks_in_image`` (pixel centres, align_corners
    False, zeros outside the M x M map), for all masks in one ``grid_sample`` so that the traced
    graph holds no per-box loop.
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
        (masked,) = model.predict_masks(mask_features, [detections])
        height, width = images.image_sizes[0]

        if model.test_topk_masks > 0:
            # Under its own name the M x M masks follow detector_postprocess's box filtering
            # without being pasted by it.
            fields = masked.get_fields()
            masked = Instances(masked.image_size, **fields, mask_probs=fields["pred_masks"])
            masked.remove("pred_masks")
            masked = detector_postprocess(masked, height, width)
            masks = paste_masks(masked.mask_probs, masked.pred_boxes.tensor, height, width)
        else:
            masks = torch.zeros((0, height, width), dtype=torch.bool, device=image.device)

        kept = [masked] if model.test_topk_masks > 0 else []
        if model.test_topk_masks == 0 or not model.drop_unmasked:
            # The detections beyond the top k, without masks (the eager model's empty ones).
            kept.append(detector_postprocess(detections[model.test_topk_masks :], height, width))
        boxes = torch.cat([k.pred_boxes.tensor for k in kept])
        scores = torch.cat([k.scores for k in kept])
        classes = torch.cat([k.pred_classes for k in kept])
        return boxes, scores, classes, masks

