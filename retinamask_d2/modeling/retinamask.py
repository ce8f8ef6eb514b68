"""The RetinaMask meta-architecture, detectron2's RetinaNet plus a mask branch, and its
post-processing."""

import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import batched_nms, cat, paste_masks_in_image
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances, pairwise_iou
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from .atss_matcher import atss_label_anchors
from .mask_branch import RetinaMaskBranch
from .mask_nms import mask_nms
from .oriented_rois import paste_frame_masks
from .retinanet_head import retinanet_arguments
from .smooth_l1 import SelfAdjustingSmoothL1Loss

__all__ = ["RetinaMask"]

SMOOTH_L1 = "smooth_l1"


@META_ARCH_REGISTRY.register()
class RetinaMask(RetinaNet):
    """RetinaMask (Fu, Shvets, Berg 2019): RetinaNet whose FPN also feeds a mask branch.

    The box branch is detectron2's RetinaNet unchanged, except for an optional self-adjusting
    smooth L1 box loss. In training, the mask branch learns from the current model's top
    detections (chosen without gradient) and the GT boxes; its loss flows back through RoIAlign
    into the FPN and the backbone. In inference, the top detections get masks.
    """

    @configurable
    def __init__(
        self,
        *,
        mask_branch: RetinaMaskBranch,
        mask_train_topk: int = 100,
        mask_train_score_thresh: float = 0.05,
        mask_train_topk_candidates: int = 1000,
        mask_train_nms_thresh: float = 0.4,
        test_topk_masks: int = 50,
        mask_score_thresh: float = 0.0,
        drop_unmasked: bool = False,
        box_reg_loss: nn.Module | None = None,
        box_reg_loss_weight: float = 1.0,
        mask_nms_thresh: float | None = None,
        mask_nms_pre_topk: int = 100,
        unmasked_nms_thresh: float = 0.5,
        class_agnostic_nms: bool = False,
        atss_topk: int = 0,
        **kwargs,
    ):
        """
        Args:
            mask_branch: predicts masks from the features it names in ``in_features``.
            mask_train_topk: how many post-NMS detections per image are training RoIs of the
                mask branch (besides the GT boxes).
            mask_train_score_thresh, mask_train_topk_candidates, mask_train_nms_thresh: how
                those detections are decoded (score threshold, candidates per level, NMS IoU):
                the training counterparts of RetinaNet's test-time arguments.
            test_topk_masks: how many of each image's highest-scoring detections get masks at
                test time; 0 gives box-only inference, without the mask branch's cost.
            mask_score_thresh: of those, only detections scoring at least this get masks.
            drop_unmasked: whether the other detections are dropped (True) or kept with empty
                masks (False).
            box_reg_loss: if given, replaces RetinaNet's box regression loss; called on the
                (M, 4) predicted and target deltas of the positive anchors, returns their sum.
            box_reg_loss_weight: multiplies ``loss_box_reg``.
            mask_nms_thresh: if given, the masked detections of an image are also suppressed
                by mask IoU above it (``mask_nms``), after RetinaNet's box NMS; then the top
                ``mask_nms_pre_topk`` detections get masks (instead of ``test_topk_masks``) and
                the others are suppressed by box IoU above ``unmasked_nms_thresh``.
            class_agnostic_nms: test-time NMS (box and mask) across classes.
            atss_topk: above 0, anchors are labelled by ATSS (``atss_matcher.py``) with this
                many candidate locations per level, instead of by ``anchor_matcher``.
            kwargs: arguments of detectron2's :class:`RetinaNet`.
        """
        super().__init__(**kwargs)
        for name, value in (("TRAIN_TOPK", mask_train_topk), ("TEST_TOPK_MASKS", test_topk_masks)):
            if value < 0:
                raise ValueError(f"MODEL.RETINAMASK.{name} must be >= 0, got {value}")
        self.mask_branch = mask_branch
        self.mask_train_topk = mask_train_topk
        self.mask_train_score_thresh = mask_train_score_thresh
        self.mask_train_topk_candidates = mask_train_topk_candidates
        self.mask_train_nms_thresh = mask_train_nms_thresh
        self.test_topk_masks = test_topk_masks
        self.mask_score_thresh = mask_score_thresh
        self.drop_unmasked = drop_unmasked
        self.box_reg_loss = box_reg_loss
        self.box_reg_loss_weight = box_reg_loss_weight
        if mask_nms_thresh is not None and test_topk_masks == 0:
            raise ValueError("MODEL.RETINAMASK.MASK_NMS needs masks: TEST_TOPK_MASKS > 0")
        self.mask_nms_thresh = mask_nms_thresh
        self.mask_nms_pre_topk = mask_nms_pre_topk
        self.unmasked_nms_thresh = unmasked_nms_thresh
        self.class_agnostic_nms = class_agnostic_nms
        self.atss_topk = atss_topk

    @classmethod
    def from_config(cls, cfg: CfgNode):
        ret = retinanet_arguments(cfg)
        node = cfg.MODEL.RETINAMASK
        ret["anchor_matcher"] = Matcher(
            cfg.MODEL.RETINANET.IOU_THRESHOLDS,
            cfg.MODEL.RETINANET.IOU_LABELS,
            allow_low_quality_matches=node.ALLOW_LOW_QUALITY_MATCHES,
        )
        ret["mask_branch"] = RetinaMaskBranch(cfg, ret["backbone"].output_shape())
        ret["mask_train_topk"] = node.TRAIN_TOPK
        ret["mask_train_score_thresh"] = node.TRAIN_SCORE_THRESH
        ret["mask_train_topk_candidates"] = node.TRAIN_TOPK_CANDIDATES
        ret["mask_train_nms_thresh"] = node.TRAIN_NMS_THRESH
        ret["test_topk_masks"] = node.TEST_TOPK_MASKS
        ret["mask_score_thresh"] = node.TEST_MASK_SCORE_THRESH
        ret["drop_unmasked"] = node.DROP_UNMASKED
        if node.MASK_NMS.ENABLED:
            ret["unmasked_nms_thresh"] = ret["test_nms_thresh"]
            ret["test_nms_thresh"] = node.MASK_NMS.BOX_THRESH
            ret["mask_nms_thresh"] = node.MASK_NMS.THRESH
            ret["mask_nms_pre_topk"] = node.MASK_NMS.PRE_TOPK
        ret["class_agnostic_nms"] = node.CLASS_AGNOSTIC_NMS
        if node.ATSS.ENABLED:
            if node.ATSS.TOPK < 1:
                raise ValueError(f"MODEL.RETINAMASK.ATSS.TOPK must be >= 1, got {node.ATSS.TOPK}")
            ret["atss_topk"] = node.ATSS.TOPK
        loss_type = cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE
        if loss_type != SMOOTH_L1 and node.BOX_REG_LOSS_WEIGHT != 1.0:
            raise ValueError(
                f"MODEL.RETINAMASK.BOX_REG_LOSS_WEIGHT ({node.BOX_REG_LOSS_WEIGHT}) averages the "
                "smooth L1 box loss over its 4 coordinates; MODEL.RETINANET.BBOX_REG_LOSS_TYPE "
                f"{loss_type!r} has no coordinates to average over: set "
                "MODEL.RETINAMASK.BOX_REG_LOSS_WEIGHT 1.0 with it."
            )
        ret["box_reg_loss_weight"] = node.BOX_REG_LOSS_WEIGHT
        adjusting = node.SELF_ADJUSTING_SMOOTH_L1
        if adjusting.ENABLED:
            if loss_type != SMOOTH_L1:
                raise ValueError(
                    "MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.ENABLED replaces the smooth L1 box "
                    "loss; it cannot be combined with MODEL.RETINANET.BBOX_REG_LOSS_TYPE "
                    f"{loss_type!r}."
                )
            ret["box_reg_loss"] = SelfAdjustingSmoothL1Loss(
                4,
                momentum=adjusting.MOMENTUM,
                beta_max=adjusting.BETA_MAX,
                beta_min=adjusting.BETA_MIN,
            )
        return ret

    def forward(self, batched_inputs: list[dict[str, Tensor]]):
        """Same inputs and outputs as detectron2's RetinaNet, plus ``loss_mask`` in training
        and ``pred_masks`` (pasted at the requested output size) in inference.

        Overrides ``DenseDetector.forward`` because that one passes on only the box head's
        features, while the mask branch needs its own (P3-P5 by default).
        """
        images = self.preprocess_image(batched_inputs)
        all_features = self.backbone(images.tensor)
        features = [all_features[f] for f in self.head_in_features]
        mask_features = [all_features[f] for f in self.mask_branch.in_features]
        predictions = self.head(features)

        if self.training:
            if "instances" not in batched_inputs[0]:
                raise ValueError(
                    "RetinaMask needs 'instances' (with gt_masks) in every input when training."
                )
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            # RetinaNet.forward_training, inlined to share the transposed predictions and the
            # anchors with detect_mask_training_rois.
            pred_logits, pred_deltas = self._transpose_dense_predictions(
                predictions, [self.num_classes, 4]
            )
            anchors = self.anchor_generator(features)
            gt_labels, gt_boxes = self.label_anchors(anchors, gt_instances)
            losses = self.losses(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes)
            _check_finite_deltas(pred_deltas, losses)
            detections = self.detect_mask_training_rois(images, anchors, pred_logits, pred_deltas)
            losses.update(self.mask_branch.losses(mask_features, detections, gt_instances))
            if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
                self.visualize_training(batched_inputs, detections)
            return losses

        detections = self.forward_inference(images, features, predictions)
        detections = [_with_clipped_boxes(d) for d in detections]
        masked = self.predict_masks(mask_features, detections)
        return self._postprocess(masked, detections, batched_inputs, images.image_sizes)

    def predict_masks(
        self, mask_features: list[Tensor], detections: list[Instances]
    ) -> list[Instances]:
        """The detections of each image that get masks: its top ``test_topk_masks`` (with mask
        NMS ``mask_nms_pre_topk``; score sorted, boxes clipped to the image) that score at least
        ``mask_score_thresh``, with ``pred_masks`` (N, 1, M, M) probabilities.

        The boxes must be clipped first: ``detector_postprocess`` pastes each mask into its
        clipped box, so the mask must be predicted for that box (as Mask R-CNN does), not for the
        part of a box that RetinaNet placed outside the image.
        """
        if self.test_topk_masks == 0:
            return [d[:0] for d in detections]
        topk = self.test_topk_masks if self.mask_nms_thresh is None else self.mask_nms_pre_topk
        chosen = []
        for d in detections:
            confident = int((d.scores[:topk] >= self.mask_score_thresh).sum())
            chosen.append(d[:confident])  # a prefix: detections come sorted by score
        return self.mask_branch.predict(mask_features, chosen)

    def _postprocess(
        self,
        masked: list[Instances],
        detections: list[Instances],
        batched_inputs: list[dict],
        image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Instances]]:
        """Each image's detections at its requested output size, as ``GeneralizedRCNN`` returns
        them: masked ones first, with their masks pasted by ``detector_postprocess``; then,
        unless ``drop_unmasked``, the others with empty masks.

        The empty masks are made at the output size instead of being pasted: detectron2 pastes
        masks one at a time on the CPU. With ``test_topk_masks`` 0 no detection has a mask and
        none is dropped: box-only results.
        """
        results = []
        for masked_i, detections_i, inputs, image_size in zip(
            masked, detections, batched_inputs, image_sizes
        ):
            height = inputs.get("height", image_size[0])
            width = inputs.get("width", image_size[1])
            if self.test_topk_masks == 0:
                results.append({"instances": detector_postprocess(detections_i, height, width)})
                continue
            # detectron2's paste, one mask at a time on the CPU: pasting all masks in one pass is
            # no faster on the synthetic images and slower at COCO scale, where the pixel count,
            # not the per-mask overhead, dominates (benchmarks/paste_cost.py).
            output = self._suppress_by_mask(_paste_masks(masked_i, height, width))
            rest = detections_i[len(masked_i) :]
            if not self.drop_unmasked and len(rest) > 0:
                rest = self._suppress_unmasked(detector_postprocess(rest, height, width), output)
                rest.pred_masks = torch.zeros(
                    (len(rest), *output.pred_masks.shape[1:]),
                    dtype=torch.bool,
                    device=output.pred_masks.device,
                )
                # detectron2 pastes no masks as uint8 (when no detection scores
                # mask_score_thresh): bool like the others.
                output.pred_masks = output.pred_masks.bool()
                output = Instances.cat([output, rest])
            results.append({"instances": output})
        return results

    def _suppress_by_mask(self, masked: Instances) -> Instances:
        """``masked`` (pasted masks) without its mask-IoU duplicates, when mask NMS is on; a pair
        with an empty mask is compared by box IoU, at RetinaNet's own NMS threshold."""
        if self.mask_nms_thresh is None:
            return masked
        classes = None if self.class_agnostic_nms else masked.pred_classes
        box_iou = pairwise_iou(masked.pred_boxes, masked.pred_boxes)
        keep = mask_nms(
            masked.pred_masks,
            masked.scores,
            classes,
            self.mask_nms_thresh,
            box_iou=box_iou,
            box_threshold=self.unmasked_nms_thresh,
        )
        return masked[keep]

    def _suppress_unmasked(self, rest: Instances, masked: Instances) -> Instances:
        """With mask NMS, the unmasked detections ``rest`` without those that box NMS at
        ``unmasked_nms_thresh`` removes, against the kept ``masked`` ones and among themselves
        (the loose box stage is only for detections whose masks can tell them apart), as many
        as ``max_detections_per_image`` leaves room for after ``masked``."""
        if self.mask_nms_thresh is None or len(rest) == 0:
            return rest
        room = max(self.max_detections_per_image - len(masked), 0)
        if len(masked) > 0:
            overlap = pairwise_iou(rest.pred_boxes, masked.pred_boxes)
            groups = self._nms_groups(rest.pred_classes)[:, None]
            overlap[groups != self._nms_groups(masked.pred_classes)] = 0.0
            rest = rest[overlap.max(dim=1).values <= self.unmasked_nms_thresh]
        keep = batched_nms(
            rest.pred_boxes.tensor,
            rest.scores,
            self._nms_groups(rest.pred_classes),
            self.unmasked_nms_thresh,
        )
        return rest[keep[:room]]

    def _nms_groups(self, classes: Tensor) -> Tensor:
        """The groups test-time NMS suppresses within: the classes, or one group when
        ``class_agnostic_nms``."""
        return torch.zeros_like(classes) if self.class_agnostic_nms else classes

    def inference_single_image(self, anchors, box_cls, box_delta, image_size):
        """RetinaNet's, with NMS across classes when ``class_agnostic_nms``; with mask NMS, all
        the survivors of the loose box NMS (``_postprocess`` cuts them to
        ``max_detections_per_image`` once masks and box NMS have removed their duplicates)."""
        if not self.class_agnostic_nms and self.mask_nms_thresh is None:
            return super().inference_single_image(anchors, box_cls, box_delta, image_size)
        pred = self._decode_multi_level_predictions(
            anchors,
            box_cls,
            box_delta,
            self.test_score_thresh,
            self.test_topk_candidates,
            image_size,
        )
        keep = batched_nms(
            pred.pred_boxes.tensor,
            pred.scores,
            self._nms_groups(pred.pred_classes),
            self.test_nms_thresh,
        )
        limit = self.max_detections_per_image if self.mask_nms_thresh is None else len(keep)
        return pred[keep[:limit]]

    @torch.no_grad()
    def detect_mask_training_rois(
        self,
        images: ImageList,
        anchors: list[Boxes],
        pred_logits: list[Tensor],
        pred_deltas: list[Tensor],
    ) -> list[Instances]:
        """The current model's top ``mask_train_topk`` post-NMS detections of each image.

        ``anchors``, ``pred_logits`` and ``pred_deltas`` are those the training losses use
        (``pred_*`` as ``_transpose_dense_predictions`` returns them, each level (N, Hi*Wi*A,
        K or 4)). Decoded like ``inference_single_image`` but with the training RoIs' own score
        threshold, candidate count and NMS threshold, so that test-time settings leave training
        alone. Not ``forward_inference``: its in-place ``sigmoid_`` would write into these
        logits; the out-of-place ``sigmoid`` here leaves them as the losses read them.
        """
        detections = []
        for i, image_size in enumerate(images.image_sizes):
            # Level by level: detectron2 v0.6's _decode_multi_level_predictions ignores its
            # score_thresh and topk_candidates arguments (it reads the test-time attributes).
            per_level = [
                self._decode_per_level_predictions(
                    anchors_level,
                    logits[i].sigmoid(),
                    deltas[i],
                    self.mask_train_score_thresh,
                    self.mask_train_topk_candidates,
                    image_size,
                )
                for anchors_level, logits, deltas in zip(anchors, pred_logits, pred_deltas)
            ]
            dets = Instances.cat(per_level)
            keep = batched_nms(
                dets.pred_boxes.tensor, dets.scores, dets.pred_classes, self.mask_train_nms_thresh
            )
            detections.append(dets[keep[: self.mask_train_topk]])
        return detections

    @torch.no_grad()
    def label_anchors(self, anchors: list[Boxes], gt_instances: list[Instances]):
        """RetinaNet's, or, with ``atss_topk``, ATSS's labels and matched boxes."""
        if self.atss_topk == 0:
            return super().label_anchors(anchors, gt_instances)
        per_location = self.anchor_generator.num_anchors
        return atss_label_anchors(
            anchors,
            gt_instances,
            [self.atss_topk * a for a in per_location],
            list(self.anchor_generator.strides),
            self.num_classes,
        )

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """RetinaNet's losses; ``loss_box_reg`` computed by ``box_reg_loss`` when set, and
        weighted by ``box_reg_loss_weight``.

        RetinaNet computes its focal loss and the loss normalizer (which this reuses) in the
        same method as its box loss; recomputing the box loss costs less than re-implementing
        the rest and keeps up with detectron2's changes.
        """
        losses = super().losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        if self.box_reg_loss is not None:
            gt_labels = torch.stack(gt_labels)
            positive = (gt_labels >= 0) & (gt_labels != self.num_classes)
            all_anchors = Boxes.cat(anchors).tensor
            gt_deltas = torch.stack(
                [self.box2box_transform.get_deltas(all_anchors, boxes) for boxes in gt_boxes]
            )
            loss = self.box_reg_loss(cat(pred_anchor_deltas, dim=1)[positive], gt_deltas[positive])
            losses["loss_box_reg"] = loss / self.loss_normalizer
        losses["loss_box_reg"] = losses["loss_box_reg"] * self.box_reg_loss_weight
        return losses


def _check_finite_deltas(pred_deltas: list[Tensor], losses: dict[str, Tensor]) -> None:
    """Stop as a non-finite loss does (detectron2's ``FloatingPointError``, naming the iteration
    and the losses) when the box head's deltas are not finite: decoding them into the mask
    branch's training RoIs would otherwise fail in ``Boxes`` with a bare assertion."""
    if torch.stack([torch.isfinite(d).all() for d in pred_deltas]).all():
        return
    shown = {name: float(value.detach()) for name, value in losses.items()}
    raise FloatingPointError(
        f"Loss became infinite or NaN at iteration={get_event_storage().iter}! The box head "
        f"predicted non-finite box deltas.\nloss_dict = {shown}"
    )


def _paste_masks(masked: Instances, height: int, width: int) -> Instances:
    """``detector_postprocess`` of ``masked``: boxes at the output size, masks pasted there.

    With ``mask_boxes`` (``MASK_BOX_SCALE`` above 1) each mask is pasted into that box instead
    of ``pred_boxes``, with detectron2's ``paste_masks_in_image`` as ``detector_postprocess``
    pastes; with ``mask_frames`` (oriented mask RoIs) out of that frame by
    ``paste_frame_masks``; detections whose box is empty after clipping go as there.
    """
    if masked.has("mask_frames"):
        fields = {k: v for k, v in masked.get_fields().items() if k != "pred_masks"}
        scale = (width / masked.image_size[1], height / masked.image_size[0])
        output = detector_postprocess(
            Instances(masked.image_size, **fields, mask_probs=masked.pred_masks), height, width
        )
        output.pred_masks = paste_frame_masks(
            output.mask_probs, output.mask_frames, scale, height, width
        )
        output.remove("mask_probs")
        output.remove("mask_frames")
        return output
    if not masked.has("mask_boxes"):
        return detector_postprocess(masked, height, width)
    fields = {k: v for k, v in masked.get_fields().items() if k != "pred_masks"}
    scale_x, scale_y = width / masked.image_size[1], height / masked.image_size[0]
    output = detector_postprocess(
        Instances(masked.image_size, **fields, mask_probs=masked.pred_masks), height, width
    )
    boxes = output.mask_boxes.tensor
    boxes = boxes * boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
    output.pred_masks = paste_masks_in_image(output.mask_probs[:, 0], boxes, (height, width))
    output.remove("mask_probs")
    output.remove("mask_boxes")
    return output


def _with_clipped_boxes(detections: Instances) -> Instances:
    """A shallow copy of ``detections`` whose ``pred_boxes`` are clipped to its image."""
    boxes = detections.pred_boxes.clone()
    boxes.clip(detections.image_size)
    clipped = Instances(detections.image_size, **detections.get_fields())
    clipped.pred_boxes = boxes
    return clipped
