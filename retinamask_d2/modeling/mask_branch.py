"""The mask branch of RetinaMask: RoIAlign on P3-P5 and a Mask R-CNN mask head."""

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.roi_heads.mask_head import build_mask_head
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from .mask_rois import select_mask_training_rois


class RetinaMaskBranch(nn.Module):
    """Predicts masks for boxes found by the box branch, from detectron2 parts only.

    ``ROIPooler`` assigns each box to one of ``in_features`` by its size (FPN's rule with a
    configurable canonical box size and level) and pools it with RoIAlign; a head from
    ``ROI_MASK_HEAD_REGISTRY`` turns the pooled features into mask logits; the head's
    ``mask_rcnn_loss`` / ``mask_rcnn_inference`` give the loss and the masks.
    """

    @configurable
    def __init__(
        self,
        *,
        in_features: list[str],
        pooler: ROIPooler,
        mask_head: nn.Module,
        roi_matcher: Matcher,
        loss_weight: float = 1.0,
        test_topk: int = 50,
        drop_unmasked: bool = False,
    ):
        """
        Args:
            in_features: names of the backbone features to pool from, finest first.
            pooler: pools the RoIs from those features.
            mask_head: a mask head with detectron2's interface (``forward(x, instances)``
                returns ``{"loss_mask": ...}`` in training and sets ``pred_masks`` in inference).
            roi_matcher: labels a training RoI positive (1) when it covers a GT box.
            loss_weight: multiplies ``loss_mask``.
            test_topk: how many of the highest-scoring detections get masks at test time;
                0 turns the mask branch off at test time.
            drop_unmasked: whether the other detections are dropped (True) or kept with empty
                masks (False).
        """
        super().__init__()
        if test_topk < 0:
            raise ValueError(f"MODEL.RETINAMASK.TEST_TOPK_MASKS must be >= 0, got {test_topk}")
        self.in_features = list(in_features)
        self.pooler = pooler
        self.mask_head = mask_head
        self.roi_matcher = roi_matcher
        self.loss_weight = loss_weight
        self.test_topk = test_topk
        self.drop_unmasked = drop_unmasked

    @classmethod
    def from_config(cls, cfg, input_shape: dict[str, ShapeSpec]):
        node = cfg.MODEL.RETINAMASK
        in_features = list(node.MASK_IN_FEATURES)
        missing = [f for f in in_features if f not in input_shape]
        if missing:
            raise ValueError(
                f"MODEL.RETINAMASK.MASK_IN_FEATURES names {missing}, which the backbone does not "
                f"produce; it produces {sorted(input_shape)}."
            )
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(
                "MODEL.RETINAMASK.MASK_IN_FEATURES must have the same number of channels, got "
                f"{[(f, input_shape[f].channels) for f in in_features]}."
            )
        if not 0.0 < node.POSITIVE_IOU <= 1.0:
            raise ValueError(
                f"MODEL.RETINAMASK.POSITIVE_IOU must be in (0, 1], got {node.POSITIVE_IOU}"
            )
        head_cfg = cfg.MODEL.ROI_MASK_HEAD
        if (
            not head_cfg.CLS_AGNOSTIC_MASK
            and cfg.MODEL.ROI_HEADS.NUM_CLASSES != cfg.MODEL.RETINANET.NUM_CLASSES
        ):
            raise ValueError(
                "The mask head reads its number of classes from MODEL.ROI_HEADS.NUM_CLASSES "
                f"({cfg.MODEL.ROI_HEADS.NUM_CLASSES}), which must equal "
                f"MODEL.RETINANET.NUM_CLASSES ({cfg.MODEL.RETINANET.NUM_CLASSES}): "
                "set both to the number of classes of the dataset."
            )
        resolution = head_cfg.POOLER_RESOLUTION
        pooler = ROIPooler(
            output_size=resolution,
            scales=[1.0 / input_shape[f].stride for f in in_features],
            sampling_ratio=head_cfg.POOLER_SAMPLING_RATIO,
            pooler_type=head_cfg.POOLER_TYPE,
            canonical_box_size=node.CANONICAL_BOX_SIZE,
            canonical_level=node.CANONICAL_LEVEL,
        )
        mask_head = build_mask_head(
            cfg, ShapeSpec(channels=channels.pop(), height=resolution, width=resolution)
        )
        return {
            "in_features": in_features,
            "pooler": pooler,
            "mask_head": mask_head,
            "roi_matcher": Matcher([node.POSITIVE_IOU], [0, 1], allow_low_quality_matches=False),
            "loss_weight": node.MASK_LOSS_WEIGHT,
            "test_topk": node.TEST_TOPK_MASKS,
            "drop_unmasked": node.DROP_UNMASKED,
        }

    def losses(
        self,
        features: list[Tensor],
        detections: list[Instances],
        gt_instances: list[Instances],
    ) -> dict[str, Tensor]:
        """``loss_mask`` of the positive RoIs among ``detections`` and the GT boxes.

        ``features`` are the maps of ``in_features``, in that order. With no positive RoI in
        the batch the loss is a zero that still depends on the head (as in detectron2).
        """
        rois = select_mask_training_rois(detections, gt_instances, self.roi_matcher)
        get_event_storage().put_scalar(
            "retinamask/num_mask_rois", sum(len(r) for r in rois) / max(len(rois), 1)
        )
        pooled = self.pooler(features, [r.proposal_boxes for r in rois])
        loss = self.mask_head(_fast_layout(pooled), rois)["loss_mask"]
        return {"loss_mask": loss * self.loss_weight}

    def predict(self, features: list[Tensor], detections: list[Instances]) -> list[Instances]:
        """Add ``pred_masks`` (N, 1, M, M) mask probabilities to score-sorted ``detections``.

        The boxes are clipped to the image first: ``detector_postprocess`` pastes each mask into
        its clipped box, so the mask must be predicted for that box (as Mask R-CNN does), not for
        the part of a box RetinaNet placed outside the image. With ``test_topk`` 0 the detections
        are returned as they are, without ``pred_masks``: box-only inference, which skips the
        mask branch's cost.
        """
        if self.test_topk == 0:
            return detections
        detections = [_with_clipped_boxes(d) for d in detections]
        masked = [d[: self.test_topk] for d in detections]
        pooled = self.pooler(features, [d.pred_boxes for d in masked])
        masked = self.mask_head(_fast_layout(pooled), masked)
        if self.drop_unmasked:
            return masked
        results = []
        for with_masks, dets in zip(masked, detections):
            rest = dets[self.test_topk :]
            if len(rest) == 0:
                results.append(with_masks)
                continue
            side = with_masks.pred_masks.shape[1:]
            rest.pred_masks = with_masks.pred_masks.new_zeros((len(rest), *side))
            results.append(Instances.cat([with_masks, rest]))
        return results

    def postprocess(self, detections: Instances, height: int, width: int) -> Instances:
        """detector_postprocess of one image's ``predict`` output, with the same result, except
        that the empty masks of the detections beyond the top ``test_topk`` are made at the
        output size instead of being pasted.

        detectron2 pastes masks one at a time on CPU: pasting the 50 empty masks cost
        about 13 ms of a 71 ms inference on a 128 x 128 image and 0.15 s at 800 x 1333
        (measured with benchmarks/profile_model.py, 1 thread).
        """
        k = self.test_topk
        if not detections.has("pred_masks") or len(detections) <= k:
            return detector_postprocess(detections, height, width)
        masked = detector_postprocess(detections[:k], height, width)
        rest = detections[k:]
        rest.remove("pred_masks")
        rest = detector_postprocess(rest, height, width)
        rest.pred_masks = torch.zeros(
            (len(rest), *masked.pred_masks.shape[1:]),
            dtype=masked.pred_masks.dtype,
            device=masked.pred_masks.device,
        )
        return Instances.cat([masked, rest])


def _fast_layout(pooled: Tensor) -> Tensor:
    """``pooled`` in the memory layout the mask head runs fastest in: channels-last on CPU.

    Measured with 50 RoIs, 1 thread, torch 2.14 (oneDNN): the benchmarks' 64-channel 2-conv
    head 38 -> 19 ms (inference) and 97 -> 79 ms (with backward), the paper's 256-channel
    4-conv head 583 -> 494 ms and 1664 -> 1470 ms; outputs equal within 2e-6 (relative).
    Other devices keep detectron2's layout (not measured there).
    """
    if pooled.device.type != "cpu":
        return pooled
    return pooled.contiguous(memory_format=torch.channels_last)


def _with_clipped_boxes(detections: Instances) -> Instances:
    """A shallow copy of ``detections`` whose ``pred_boxes`` are clipped to its image."""
    boxes = detections.pred_boxes.clone()
    boxes.clip(detections.image_size)
    clipped = Instances(detections.image_size, **detections.get_fields())
    clipped.pred_boxes = boxes
    return clipped
