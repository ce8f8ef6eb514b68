"""The RetinaMask meta-architecture: detectron2's RetinaNet plus a mask branch."""

import torch
from detectron2.config import configurable
from detectron2.layers import cat
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.meta_arch.retinanet import RetinaNet
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from .modeling.mask_branch import RetinaMaskBranch
from .modeling.retinanet_head import build_retinanet_head
from .modeling.smooth_l1 import SelfAdjustingSmoothL1Loss

__all__ = ["RetinaMask"]


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
        box_reg_loss: nn.Module | None = None,
        box_reg_loss_weight: float = 1.0,
        **kwargs,
    ):
        """
        Args:
            mask_branch: predicts masks from the features it names in ``in_features``.
            mask_train_topk: how many post-NMS detections per image are training RoIs of the
                mask branch (besides the GT boxes); at most ``max_detections_per_image``.
            box_reg_loss: if given, replaces RetinaNet's box regression loss; called on the
                (M, 4) predicted and target deltas of the positive anchors, returns their sum.
            box_reg_loss_weight: multiplies ``loss_box_reg``.
            kwargs: arguments of detectron2's :class:`RetinaNet`.
        """
        super().__init__(**kwargs)
        if mask_train_topk < 0:
            raise ValueError(f"MODEL.RETINAMASK.TRAIN_TOPK must be >= 0, got {mask_train_topk}")
        self.mask_branch = mask_branch
        self.mask_train_topk = mask_train_topk
        self.box_reg_loss = box_reg_loss
        self.box_reg_loss_weight = box_reg_loss_weight

    @classmethod
    def from_config(cls, cfg):
        # RetinaNet's own from_config, with the head rebuilt by build_retinanet_head (for GN
        # on detectron2 v0.6, whose head builder rejects it).
        without_head_norm = cfg.clone()
        without_head_norm.defrost()
        without_head_norm.MODEL.RETINANET.NORM = ""
        ret = super().from_config(without_head_norm)
        backbone_shape = ret["backbone"].output_shape()
        ret["head"] = build_retinanet_head(
            cfg, [backbone_shape[f] for f in cfg.MODEL.RETINANET.IN_FEATURES]
        )
        node = cfg.MODEL.RETINAMASK
        ret["anchor_matcher"] = Matcher(
            cfg.MODEL.RETINANET.IOU_THRESHOLDS,
            cfg.MODEL.RETINANET.IOU_LABELS,
            allow_low_quality_matches=node.ALLOW_LOW_QUALITY_MATCHES,
        )
        ret["mask_branch"] = RetinaMaskBranch(cfg, backbone_shape)
        ret["mask_train_topk"] = node.TRAIN_TOPK
        ret["box_reg_loss_weight"] = node.BOX_REG_LOSS_WEIGHT
        adjusting = node.SELF_ADJUSTING_SMOOTH_L1
        if adjusting.ENABLED:
            if cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE != "smooth_l1":
                raise ValueError(
                    "MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.ENABLED replaces the smooth L1 box "
                    "loss; it cannot be combined with MODEL.RETINANET.BBOX_REG_LOSS_TYPE "
                    f"{cfg.MODEL.RETINANET.BBOX_REG_LOSS_TYPE!r}."
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
            detections = self.detect_mask_training_rois(images, anchors, pred_logits, pred_deltas)
            losses.update(self.mask_branch.losses(mask_features, detections, gt_instances))
            if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
                self.visualize_training(batched_inputs, detections)
            return losses

        results = self.forward_inference(images, features, predictions)
        results = self.mask_branch.predict(mask_features, results)
        processed_results = []
        for results_per_image, input_per_image, image_size in zip(
            results, batched_inputs, images.image_sizes
        ):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed_results.append(
                {"instances": self.mask_branch.postprocess(results_per_image, height, width)}
            )
        return processed_results

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
        K or 4)). RetinaNet's own test-time decoding and NMS, without gradient. Not
        ``forward_inference``: its in-place ``sigmoid_`` would write into these logits; the
        out-of-place ``sigmoid`` here leaves them as the losses read them.
        """
        detections = []
        for i, image_size in enumerate(images.image_sizes):
            scores = [x[i].sigmoid() for x in pred_logits]
            deltas = [x[i] for x in pred_deltas]
            dets = self.inference_single_image(anchors, scores, deltas, image_size)
            detections.append(dets[: self.mask_train_topk])
        return detections

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
