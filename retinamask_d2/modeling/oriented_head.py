"""Which frame each mask RoI gets: a small head on the RoI's box features that regresses the
object's rotated rectangle, trained on the rectangle fitted to the GT mask.

Why a regression head rather than a first coarse mask in the box: it costs one small conv
layer pair on the features the box pooler already gives, instead of a second pass of the mask
head, and the angle it gives is the model's own (what upright cut-outs need).
"""

import math

import fvcore.nn.weight_init as weight_init
import numpy as np
import torch
from detectron2.structures import BitMasks, Instances, PolygonMasks
from fvcore.nn import smooth_l1_loss
from torch import Tensor, nn

from .oriented_rois import (
    box_frames,
    finish_frames,
    fit_frames,
    fit_polygon_rectangle,
    pad_frames,
)

# Above this length (a multiple of the box diagonal), a predicted side is clamped: exp of an
# untrained output must not make a frame that covers the whole image.
MAX_SIDE_LOG = math.log(2.0)
# A predicted centre is kept within this many box diagonals of the box's centre (the object's
# own centre lies within half a diagonal): an untrained head on large features (a backbone
# trained from scratch, FrozenBN at init) would otherwise put frames off the image, where
# the pooled features are zeros and the mask head learns nothing.
MAX_CENTRE_OFFSET = 0.5
# Elongated objects' targets are unit vectors (cos 2t, sin 2t), near-square ones (0, 0): a
# prediction of norm below this is read as "near-square", and the RoI keeps its box.
ORIENTED_NORM = 0.5
SMOOTH_L1_BETA = 0.1


class OrientedFrameHead(nn.Module):
    """Regresses, per RoI, six numbers relative to its box (centre ``cx``, ``cy`` and size
    ``w``, ``h`` of the box's diagonal ``d``):

    ``((x - cx) / d, (y - cy) / d, log(w' / d), log(h' / d), cos 2t, sin 2t)``

    for the object's rectangle (x, y, w', h', t). The angle is doubled so that t and t + pi,
    the same rectangle, have the same target. Near-square objects have target (0, 0) for the
    angle and no target for the rest: they keep their box, as at inference a prediction of
    angle norm below ``ORIENTED_NORM`` does. The last layer starts near zero, so an untrained
    head gives every RoI its box, and the frames turn as the head learns.
    """

    def __init__(
        self,
        in_channels: int,
        input_size: int,
        conv_dim: int,
        min_elongation: float,
        length_pad: float,
        width_pad: float,
        min_width_ratio: float,
        loss_weight: float,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, conv_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(conv_dim, conv_dim, 3, stride=2, padding=1)
        reduced = (input_size + 1) // 2
        self.fc = nn.Linear(conv_dim * reduced * reduced, 256)
        self.predictor = nn.Linear(256, 6)
        for layer in (self.conv1, self.conv2):
            weight_init.c2_msra_fill(layer)
        weight_init.c2_xavier_fill(self.fc)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)
        self.min_elongation = min_elongation
        self.length_pad = length_pad
        self.width_pad = width_pad
        self.min_width_ratio = min_width_ratio
        self.loss_weight = loss_weight

    def forward(self, box_features: Tensor) -> Tensor:
        """(R, 6) regression outputs from (R, C, S, S) features pooled over the RoIs' boxes."""
        x = torch.relu(self.conv1(box_features))
        x = torch.relu(self.conv2(x))
        return self.predictor(torch.relu(self.fc(x.flatten(1))))

    def frames(self, outputs: Tensor, boxes: Tensor) -> Tensor:
        """(R, 5) frames masks are pooled, learned and pasted in: the padded predicted
        rectangle where the prediction is elongated, the box (unpadded) elsewhere."""
        outputs = outputs.detach()
        centre, diag = _centre_and_diagonal(boxes)
        offsets = outputs[:, :2].clamp(-MAX_CENTRE_OFFSET, MAX_CENTRE_OFFSET)
        xy = centre + offsets * diag[:, None]
        sides = outputs[:, 2:4].clamp(max=MAX_SIDE_LOG).exp() * diag[:, None]
        theta = 0.5 * torch.atan2(outputs[:, 5], outputs[:, 4])
        rectangles = pad_frames(
            torch.cat([xy, sides, theta[:, None]], dim=1),
            self.length_pad,
            self.width_pad,
            self.min_width_ratio,
        )
        oriented = outputs[:, 4:6].norm(dim=1) >= ORIENTED_NORM
        return torch.where(oriented[:, None], rectangles, box_frames(boxes))

    def losses(self, outputs: Tensor, rois: list[Instances]) -> dict[str, Tensor]:
        """``loss_mask_frame``: smooth L1 between ``outputs`` and the targets of the GT
        rectangles of the RoIs (``rois`` with ``proposal_boxes`` and ``gt_masks``), averaged
        over the RoIs."""
        boxes = torch.cat([r.proposal_boxes.tensor for r in rois])
        targets, elongated = self.targets(rois, boxes)
        angle = smooth_l1_loss(outputs[:, 4:6], targets[:, 4:6], SMOOTH_L1_BETA, "sum")
        shape = smooth_l1_loss(
            outputs[elongated, :4], targets[elongated, :4], SMOOTH_L1_BETA, "sum"
        )
        loss = (angle + shape) / max(len(boxes), 1)
        return {"loss_mask_frame": loss * self.loss_weight}

    def with_gt_frames(self, gt: Instances) -> Instances:
        """A copy of one image's GT instances with ``gt_frames`` (N, 5) and ``gt_elongated``
        (N,), their masks' frames. Fitted here once per object, the RoIs that cover it take
        them along (``select_mask_training_rois``) instead of fitting its mask once per RoI."""
        copy = Instances(gt.image_size, **gt.get_fields())
        if len(gt) > 0 and gt.has("gt_masks"):
            device = gt.gt_boxes.tensor.device
            copy.gt_frames, copy.gt_elongated = gt_frames(gt.gt_masks, self.min_elongation, device)
        return copy

    def targets(self, rois: list[Instances], boxes: Tensor) -> tuple[Tensor, Tensor]:
        """(R, 6) regression targets and (R,) whether each RoI's object is elongated."""
        fitted, elongated = [], []
        for r in rois:
            if len(r) == 0:  # an image without GT has no gt_masks field
                continue
            if r.has("gt_frames"):  # fitted once per GT by with_gt_frames
                frames, long = r.gt_frames, r.gt_elongated
            else:
                frames, long = gt_frames(r.gt_masks, self.min_elongation, boxes.device)
            fitted.append(frames)
            elongated.append(long)
        if not fitted:
            return boxes.new_zeros((0, 6)), torch.zeros(0, dtype=torch.bool, device=boxes.device)
        fitted, elongated = torch.cat(fitted), torch.cat(elongated)
        centre, diag = _centre_and_diagonal(boxes)
        offsets = (fitted[:, :2] - centre) / diag[:, None]
        sides = (fitted[:, 2:4].clamp(min=1e-3) / diag[:, None]).log()
        angle = torch.stack([(2 * fitted[:, 4]).cos(), (2 * fitted[:, 4]).sin()], dim=1)
        angle = angle * elongated[:, None]
        return torch.cat([offsets, sides, angle], dim=1), elongated


def gt_frames(gt_masks, min_elongation: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """Frames (N, 5) and elongation (N,) of GT masks: each fitted exactly from its polygons, or
    from its bitmask's pixels inside its box."""
    if isinstance(gt_masks, PolygonMasks):
        # In numpy: PolygonMasks.get_bounding_boxes runs torch ops per polygon, which cost
        # more than the fit itself for a batch's few hundred RoIs.
        points = [np.concatenate(p).reshape(-1, 2) for p in gt_masks.polygons]
        corners = [np.concatenate([q.min(0), q.max(0)]) for q in points]
        boxes = torch.tensor(np.array(corners).reshape(-1, 4), dtype=torch.float32, device=device)
        rectangles = [fit_polygon_rectangle(polygons) for polygons in gt_masks.polygons]
        valid = torch.tensor([r is not None for r in rectangles], dtype=torch.bool, device=device)
        fitted = boxes.new_tensor([r if r is not None else [0.0] * 5 for r in rectangles])
        return finish_frames(fitted.reshape(-1, 5), valid, boxes, min_elongation)
    if not isinstance(gt_masks, BitMasks):
        raise TypeError(
            "MODEL.RETINAMASK.MASK_ROI 'oriented' needs the GT masks as detectron2 PolygonMasks "
            f"or BitMasks (INPUT.MASK_FORMAT 'polygon' or 'bitmask'), got {type(gt_masks).__name__}"
        )
    boxes = gt_masks.get_bounding_boxes().tensor.to(device=device, dtype=torch.float32)
    if len(boxes) == 0:
        return boxes.new_zeros((0, 5)), torch.zeros(0, dtype=torch.bool, device=device)
    fits = []
    for mask, box in zip(gt_masks.tensor.to(device), boxes):
        # The mask's own pixels (cells of 1 px), cropped to its box.
        x0, y0, x1, y1 = (int(v) for v in box.round().tolist())
        crop = mask[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
        cell_box = box.new_tensor([[x0, y0, x0 + crop.shape[1], y0 + crop.shape[0]]])
        fits.append(fit_frames(crop[None], cell_box, min_elongation))
    return torch.cat([f for f, _ in fits]), torch.cat([e for _, e in fits])


def _centre_and_diagonal(boxes: Tensor) -> tuple[Tensor, Tensor]:
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    diag = (boxes[:, 2:] - boxes[:, :2]).norm(dim=1).clamp(min=1e-3)
    return centre, diag
