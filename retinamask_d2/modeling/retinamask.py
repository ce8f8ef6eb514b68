"""The RetinaMask meta-architecture, detectron2's RetinaNet plus a mask branch, and its
post-processing."""

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.layers import batched_nms, cat
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
from .oriented_rois import box_frames, normalise_frames, scale_frames
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
        and ``pred_masks`` (pasted at the requested output size) in inference; with oriented
        mask RoIs (``MASK_ROI: "oriented"``) also ``pred_frames`` (N, 5) wherever there are
        ``pred_masks``: each detection's frame (cx, cy, w, h, theta) at that size, that of its box
        for the detections without a mask.

        Overrides ``DenseDetector.forward`` because that one passes on only the box head's
        features, while the mask branch needs its own (P3-P5 by default).
        """
        images = self.preprocess_image(batched_inputs)
        if not self.training:
            sizes = [
                (inputs.get("height", size[0]), inputs.get("width", size[1]))
                for inputs, size in zip(batched_inputs, images.image_sizes)
            ]
            return [
                {"instances": _joined(masked, unmasked)}
                for masked, unmasked in self.detect(images, sizes)
            ]
        if "instances" not in batched_inputs[0]:
            raise ValueError(
                "RetinaMask needs 'instances' (with gt_masks) in every input when training."
            )
        features, mask_features = self._features(images)
        predictions = self.head(features)
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

    def _features(self, images: ImageList) -> tuple[list[Tensor], list[Tensor]]:
        """The backbone's maps of ``images``: those of the box head, those of the mask branch."""
        all_features = self.backbone(images.tensor)
        return (
            [all_features[f] for f in self.head_in_features],
            [all_features[f] for f in self.mask_branch.in_features],
        )

    def detect(
        self, images: ImageList, output_sizes: list[tuple[int, int]]
    ) -> list[tuple[Instances | None, Instances | None]]:
        """The whole inference of preprocessed ``images``: each image's results at its output
        size (height, width) in two parts, as :meth:`postprocess` returns them.

        ``forward`` joins the two parts; the export (``retinamask_d2.export``) traces this very
        method and returns them as tensors.
        """
        features, mask_features = self._features(images)
        detections = self.forward_inference(images, features, self.head(features))
        return self.postprocess(detections, mask_features, output_sizes)

    def postprocess(
        self,
        detections: list[Instances],
        mask_features: list[Tensor],
        output_sizes: list[tuple[int, int]],
    ) -> list[tuple[Instances | None, Instances | None]]:
        """Each image's ``detections`` (RetinaNet's, score sorted) at its output size, in two
        parts: ``masked``, the detections :meth:`mask_selection` chooses, with ``pred_masks``
        (K, H, W) bool pasted by the mask branch; ``unmasked``, the others, without masks.

        ``masked`` is None in box-only inference (``test_topk_masks`` 0), ``unmasked`` with
        ``drop_unmasked``. Boxes are clipped to the image before the masks are predicted:
        each mask is pasted into its clipped box, so it must be predicted for that box (as Mask
        R-CNN does), not for the part of a box that RetinaNet placed outside the image. Boxes
        that are empty at the output size go, as ``detector_postprocess`` drops them.
        """
        detections = [self.clip_to_image(d) for d in detections]
        if self.test_topk_masks == 0:
            return [
                (None, detector_postprocess(d, height, width))
                for d, (height, width) in zip(detections, output_sizes, strict=True)
            ]
        chosen = [self.mask_selection(d) for d in detections]
        masked = self.mask_branch.predict(
            mask_features, [d[c] for d, c in zip(detections, chosen, strict=True)]
        )
        results = []
        for masked_i, detections_i, chosen_i, (height, width) in zip(
            masked, detections, chosen, output_sizes, strict=True
        ):
            masked_i = self.masked_results(masked_i, height, width)
            unmasked = None
            if not self.drop_unmasked:
                unmasked = self.unmasked_results(detections_i[~chosen_i], masked_i, height, width)
            results.append((masked_i, unmasked))
        return results

    @staticmethod
    def clip_to_image(detections: Instances) -> Instances:
        """A shallow copy of ``detections`` whose ``pred_boxes`` are clipped to its image."""
        boxes = detections.pred_boxes.clone()
        boxes.clip(detections.image_size)
        clipped = Instances(detections.image_size, **detections.get_fields())
        clipped.pred_boxes = boxes
        return clipped

    def mask_selection(self, detections: Instances) -> Tensor:
        """(N,) bool: which of one image's score-sorted ``detections`` get masks, its top
        ``test_topk_masks`` (``mask_nms_pre_topk`` with mask NMS) that score at least
        ``mask_score_thresh`` (a prefix of them). A mask, not a count: a trace keeps it
        computed from the scores, where it would record a count as a constant."""
        scores = detections.scores
        topk = self.test_topk_masks if self.mask_nms_thresh is None else self.mask_nms_pre_topk
        rank = torch.arange(scores.shape[0], device=scores.device)
        return (rank < topk) & (scores >= self.mask_score_thresh)

    def masked_results(self, masked: Instances, height: int, width: int) -> Instances:
        """``masked`` (``pred_masks`` (K, 1, M, M) probabilities, from the mask branch) at the
        output size: ``detector_postprocess``'s boxes, the masks pasted by the mask branch,
        then, with mask NMS, without their mask-IoU duplicates.

        With oriented mask RoIs, also ``pred_frames`` (K, 5): the frame each mask was predicted
        in (``mask_frames``, padded as the frame head pads) at the output size (see
        ``oriented_rois.scale_frames``), set before mask NMS so that it indexes them along."""
        fields = {k: v for k, v in masked.get_fields().items() if k != "pred_masks"}
        scale = (width / masked.image_size[1], height / masked.image_size[0])
        # Under another name the M x M masks follow the box filtering without being pasted.
        output = detector_postprocess(
            Instances(masked.image_size, **fields, mask_probs=masked.pred_masks), height, width
        )
        output.pred_masks = self.mask_branch.paste(output.mask_probs, output, scale)
        output.remove("mask_probs")
        if output.has("mask_frames"):  # in the model's input pixels: output at the output size
            output.pred_frames = scale_frames(output.mask_frames, scale)
            output.remove("mask_frames")
        return self._suppress_by_mask(output)

    def unmasked_results(
        self, unmasked: Instances, masked: Instances, height: int, width: int
    ) -> Instances:
        """``unmasked`` at the output size, without masks; with mask NMS, without those that
        box NMS removes (see :meth:`_suppress_unmasked`) against the kept ``masked``. When
        ``masked`` has ``pred_frames`` (oriented mask RoIs), each of these gets its box's frame,
        so that every instance of the joined results has one (as every frame, with ``w >= h``:
        angle 0 for a wide box, -pi/2 for a tall one)."""
        rest = detector_postprocess(unmasked, height, width)
        if masked.has("pred_frames"):
            rest.pred_frames = normalise_frames(box_frames(rest.pred_boxes.tensor))
        return self._suppress_unmasked(rest, masked)

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
        the survivors of the loose box NMS (``unmasked_results`` cuts them to
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


def _joined(masked: Instances | None, unmasked: Instances | None) -> Instances:
    """One image's results as detectron2 returns them: ``masked`` then ``unmasked``, every
    instance with a mask (those of ``unmasked`` empty) when any has one.

    The empty masks cost no memory until written: their rows of ``pred_masks`` come from
    :func:`_empty_masks`, so the memory of the results is bounded by the image and the
    masked count, not by how many unmasked detections a low score threshold keeps.
    """
    if masked is None or unmasked is None or len(unmasked) == 0:
        return unmasked if masked is None else masked
    height, width = masked.image_size
    masks = _empty_masks(len(masked) + len(unmasked), height, width, masked.pred_masks.device)
    masks[: len(masked)] = masked.pred_masks
    fields = {k: v for k, v in masked.get_fields().items() if k != "pred_masks"}
    if masked.has("pred_embeddings"):  # detections without a mask have no embedding: zeros
        embeddings = masked.pred_embeddings
        unmasked.pred_embeddings = embeddings.new_zeros((len(unmasked), embeddings.shape[1]))
    joined = Instances.cat([Instances(masked.image_size, **fields), unmasked])
    joined.pred_masks = masks
    return joined


def _empty_masks(count: int, height: int, width: int, device: torch.device) -> Tensor:
    """(count, height, width) bool zeros whose memory is not written on the CPU.

    ``torch.zeros`` writes every byte, so each empty mask held H x W bytes of resident memory
    (``python -m benchmarks.timing.unmasked_memory``). numpy's zeros come from ``calloc``, which
    gives a large block (glibc: above 32 MiB at most) as fresh pages of the operating system, zero
    until first written: only the rows that are written (the pasted masks) take memory. The
    results stay an ordinary tensor for every reader (Visualizer, ``instances_to_coco_json``).
    Other devices get ``torch.zeros``.
    """
    if device.type != "cpu":
        return torch.zeros((count, height, width), dtype=torch.bool, device=device)
    return torch.from_numpy(np.zeros((count, height, width), dtype=bool))
