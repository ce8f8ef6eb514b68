"""The mask branch of RetinaMask: RoIs (boxes, or oriented rectangles) pooled from the FPN levels
of MODEL.RETINAMASK.MASK_IN_FEATURES (P2-P5 in the shipped configs) and a Mask R-CNN mask head."""

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.layers import ShapeSpec, paste_masks_in_image
from detectron2.modeling.matcher import Matcher
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.mask_head import build_mask_head, mask_rcnn_loss
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor, nn

from .mask_dice import mask_dice_loss
from .mask_embeddings import maskpool_embeddings
from .mask_rois import select_mask_training_rois
from .oriented_head import OrientedFrameHead
from .oriented_pooler import OrientedPooler
from .oriented_rois import WarpedMasks, paste_frame_masks, paste_frame_masks_whole

MASK_ROI_TYPES = ("box", "oriented")

# detector_postprocess's default: a pixel belongs to the instance when its probability is >= it.
MASK_THRESHOLD = 0.5


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
        dice_weight: float = 0.0,
        box_scale: float = 1.0,
        frame_head: OrientedFrameHead | None = None,
        oriented_pooler: OrientedPooler | None = None,
        embed: bool = False,
    ):
        """
        Args:
            in_features: names of the backbone features to pool from, finest first.
            pooler: pools the RoIs from those features.
            mask_head: a mask head with detectron2's interface (``forward(x, instances)``
                returns ``{"loss_mask": ...}`` in training and sets ``pred_masks`` in inference).
            roi_matcher: labels a training RoI positive (1) when it covers a GT box.
            loss_weight: multiplies ``loss_mask``.
            dice_weight: multiplies ``loss_mask_dice``; 0 leaves the Dice term out.
            box_scale: masks are pooled, learned and predicted over each box scaled by it about
                its centre (``mask_boxes``); 1 is the box itself.
            frame_head, oriented_pooler: given (``MASK_ROI: "oriented"``), masks are pooled,
                learned and predicted in the frame (rotated rectangle) ``frame_head`` gives each
                RoI from its ``mask_boxes`` features, with ``oriented_pooler``; ``pooler`` then
                only feeds ``frame_head``.
            embed: inference also sets ``pred_embeddings`` (:func:`maskpool_embeddings` of the
                pooled features under the predicted masks).
        """
        super().__init__()
        self.in_features = list(in_features)
        self.pooler = pooler
        self.mask_head = mask_head
        self.roi_matcher = roi_matcher
        self.loss_weight = loss_weight
        self.dice_weight = dice_weight
        if box_scale < 1.0:
            raise ValueError(f"MODEL.RETINAMASK.MASK_BOX_SCALE must be >= 1, got {box_scale}")
        self.box_scale = box_scale
        if (frame_head is None) != (oriented_pooler is None):
            raise ValueError("oriented mask RoIs need both a frame_head and an oriented_pooler")
        self.frame_head = frame_head
        self.oriented_pooler = oriented_pooler
        self.embed = embed

    @classmethod
    def from_config(cls, cfg: CfgNode, input_shape: dict[str, ShapeSpec]):
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
        resolution = head_cfg.POOLER_RESOLUTION
        pooler = ROIPooler(
            output_size=resolution,
            scales=[1.0 / input_shape[f].stride for f in in_features],
            sampling_ratio=head_cfg.POOLER_SAMPLING_RATIO,
            pooler_type=head_cfg.POOLER_TYPE,
            canonical_box_size=node.CANONICAL_BOX_SIZE,
            canonical_level=node.CANONICAL_LEVEL,
        )
        if node.MASK_ROI not in MASK_ROI_TYPES:
            raise ValueError(
                f"MODEL.RETINAMASK.MASK_ROI must be one of {MASK_ROI_TYPES}, got {node.MASK_ROI!r}"
            )
        oriented = {}
        if node.MASK_ROI == "oriented":
            oriented = _oriented_parts(cfg, pooler, channels=next(iter(channels)))
        return {
            **oriented,
            "in_features": in_features,
            "pooler": pooler,
            "mask_head": build_mask_head(
                _with_one_class_count(cfg),
                ShapeSpec(channels=channels.pop(), height=resolution, width=resolution),
            ),
            "roi_matcher": Matcher([node.POSITIVE_IOU], [0, 1], allow_low_quality_matches=False),
            "loss_weight": node.MASK_LOSS_WEIGHT,
            "dice_weight": node.MASK_DICE_WEIGHT,
            "box_scale": node.MASK_BOX_SCALE,
            "embed": node.TEST_EMBEDDINGS,
        }

    def losses(
        self,
        features: list[Tensor],
        detections: list[Instances],
        gt_instances: list[Instances],
    ) -> dict[str, Tensor]:
        """``loss_mask`` (and ``loss_mask_dice``) of the positive RoIs among ``detections`` and
        the GT boxes.

        ``features`` are the maps of ``in_features``, in that order. With no positive RoI in
        the batch the loss is a zero that still depends on the head (as in detectron2).
        """
        if self.frame_head is not None:
            gt_instances = [self.frame_head.with_gt_frames(gt) for gt in gt_instances]
        rois = select_mask_training_rois(detections, gt_instances, self.roi_matcher)
        if self.box_scale != 1.0:  # the targets are cropped from the scaled boxes too
            rois = [_with_proposal_boxes(r, self.mask_boxes(r.proposal_boxes)) for r in rois]
        get_event_storage().put_scalar(
            "retinamask/num_mask_rois", sum(len(r) for r in rois) / max(len(rois), 1)
        )
        pooled = self.pooler(features, [r.proposal_boxes for r in rois])
        frame_losses = {}
        if self.frame_head is not None:
            outputs = self.frame_head(pooled)
            frame_losses = self.frame_head.losses(outputs, rois)
            boxes = [r.proposal_boxes.tensor for r in rois]
            frames = self.frame_head.frames(outputs, torch.cat(boxes)).split(
                [len(b) for b in boxes]
            )
            pooled = self.oriented_pooler(features, list(frames))
            # The targets are the GT masks seen in the same frames.
            rois = [_with_warped_masks(r, f) for r, f in zip(rois, frames, strict=True)]
        pooled = _fast_layout(pooled)
        if not self.dice_weight:
            loss = self.mask_head(pooled, rois)["loss_mask"]
            return {"loss_mask": loss * self.loss_weight, **frame_losses}
        # The head's own forward returns only its loss; the Dice term needs its logits, so the
        # head's two steps (layers, then detectron2's loss with its weight) are taken here.
        logits = self.mask_head.layers(pooled)
        loss = mask_rcnn_loss(logits, rois, self.mask_head.vis_period) * self.mask_head.loss_weight
        return {
            "loss_mask": loss * self.loss_weight,
            "loss_mask_dice": mask_dice_loss(logits, rois) * self.dice_weight,
            **frame_losses,
        }

    def predict(self, features: list[Tensor], detections: list[Instances]) -> list[Instances]:
        """``detections`` with ``pred_masks`` (N, 1, M, M): mask probabilities in their mask
        boxes (:meth:`mask_boxes`), or, with oriented RoIs, in their ``mask_frames`` (N, 5) (a
        field then added; see ``oriented_rois.py``), which :meth:`paste` pastes them out of.

        Every given detection gets a mask; which ones to give is the meta-architecture's choice.
        Eager, the mask head's own inference (detectron2's ``mask_rcnn_inference``) gives them;
        while tracing, :meth:`traceable_mask_probabilities` does.
        """
        boxes = [self.mask_boxes(d.pred_boxes) for d in detections]
        if self.frame_head is not None:
            frames = self.mask_frames(features, boxes)
            pooled = self.oriented_pooler(features, frames)
            for d, f in zip(detections, frames, strict=True):
                d.mask_frames = f
        else:
            pooled = self.pooler(features, boxes)
        pooled = _fast_layout(pooled)
        if not torch.jit.is_tracing():
            detections = self.mask_head(pooled, detections)
            if self.embed:
                probs = torch.cat([d.pred_masks for d in detections])
                embeddings = maskpool_embeddings(pooled, probs).split([len(d) for d in detections])
                for d, e in zip(detections, embeddings, strict=True):
                    d.pred_embeddings = e
            return detections
        probs = self.traceable_mask_probabilities(self.mask_head.layers(pooled), detections)
        for d, p in zip(detections, probs, strict=True):
            d.pred_masks = p
        return detections

    @staticmethod
    def traceable_mask_probabilities(logits: Tensor, detections: list[Instances]) -> list[Tensor]:
        """``mask_rcnn_inference`` of the head's ``logits`` for ``detections``: each image's
        (N, 1, M, M) probabilities of its detections' classes, computed by the same operations.

        Not ``mask_rcnn_inference`` itself: it splits the masks by a Python count of each image's
        detections, which a trace records as a constant, so the traced model would fail on
        images with another number of detections. One image needs no split.
        """
        if logits.shape[1] > 1:  # class-specific masks
            classes = torch.cat([d.pred_classes for d in detections])
            logits = logits[torch.arange(logits.shape[0], device=classes.device), classes][:, None]
        probs = logits.sigmoid()
        if len(detections) == 1:
            return [probs]
        return list(probs.split([len(d) for d in detections]))

    def paste(
        self, mask_probs: Tensor, detections: Instances, scale: tuple[float, float]
    ) -> Tensor:
        """(N, H, W) bool masks of ``detections`` in their image (``detections.image_size``,
        the output size, with ``pred_boxes`` at that size): each (1, M, M) probability map of
        ``mask_probs`` resampled into its mask box — or out of its ``mask_frames``, in the
        pixels of the image the model saw, ``scale`` (sx, sy) times smaller than the output —
        and thresholded at ``MASK_THRESHOLD``.

        Eager, detectron2's ``paste_masks_in_image`` (as ``detector_postprocess`` pastes) or
        ``paste_frame_masks``; while tracing, :meth:`traceable_paste` or
        ``paste_frame_masks_whole``, which give the same masks.
        """
        height, width = detections.image_size
        if detections.has("mask_frames"):
            paste = paste_frame_masks_whole if torch.jit.is_tracing() else paste_frame_masks
            frames = detections.mask_frames
            return paste(mask_probs, frames, scale, height, width, MASK_THRESHOLD)
        boxes = self.mask_boxes(detections.pred_boxes)
        if torch.jit.is_tracing():
            return self.traceable_paste(mask_probs, boxes.tensor, height, width)
        masks = paste_masks_in_image(mask_probs[:, 0], boxes, (height, width), MASK_THRESHOLD)
        return masks.bool()  # uint8 when there is no mask

    @staticmethod
    def traceable_paste(
        mask_probs: Tensor, boxes: Tensor, height: Tensor | int, width: Tensor | int
    ) -> Tensor:
        """``paste_masks_in_image`` of ``mask_probs`` (N, 1, M, M) into ``boxes`` (N, 4, XYXY)
        of an H x W image, thresholded: the same sampling (pixel centres, align_corners False,
        zeros outside the M x M map) for all masks in one ``grid_sample`` over the whole image.

        Not ``paste_masks_in_image`` itself: on the CPU it crops each paste to its box, and a
        trace keeps the sample's crop sizes, failing on other boxes; its ONNX export does not
        load in onnxruntime either (a Slice mixing int32 and int64 indices). Pasting over the
        whole image costs more per mask, so eager inference keeps detectron2's paste
        (``benchmarks/results/paste_cost.json``).
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

    def mask_frames(self, features: list[Tensor], boxes: list[Boxes]) -> list[Tensor]:
        """Per image, the (Ni, 5) frames that oriented masks are predicted in, for its
        ``mask_boxes``: what ``frame_head`` reads from the features pooled over them."""
        outputs = self.frame_head(self.pooler(features, boxes))
        frames = self.frame_head.frames(outputs, torch.cat([b.tensor for b in boxes]))
        if len(boxes) == 1:  # no split by a Python count, which a trace would keep as it is
            return [frames]
        return list(frames.split([len(b) for b in boxes]))

    def mask_boxes(self, boxes: Boxes) -> Boxes:
        """The boxes masks are predicted over: ``boxes`` scaled by ``box_scale`` about their
        centres (``boxes`` themselves when it is 1)."""
        if self.box_scale == 1.0:
            return boxes
        centre = boxes.get_centers().repeat(1, 2)
        return Boxes(centre + (boxes.tensor - centre) * self.box_scale)


def _with_proposal_boxes(rois: Instances, boxes: Boxes) -> Instances:
    """A copy of ``rois`` whose ``proposal_boxes`` are ``boxes``."""
    copy = Instances(rois.image_size, **rois.get_fields())
    copy.proposal_boxes = boxes
    return copy


def _with_warped_masks(rois: Instances, frames: Tensor) -> Instances:
    """A copy of ``rois`` whose ``gt_masks`` give their targets in ``frames``."""
    copy = Instances(rois.image_size, **rois.get_fields())
    if rois.has("gt_masks"):
        copy.gt_masks = WarpedMasks(rois.gt_masks, frames)
    return copy


def _oriented_parts(cfg: CfgNode, pooler: ROIPooler, channels: int) -> dict:
    """The frame head and the frame pooler of ``MASK_ROI: "oriented"``, pooling as ``pooler``."""
    node = cfg.MODEL.RETINAMASK.ORIENTED
    head_cfg = cfg.MODEL.ROI_MASK_HEAD
    if node.MIN_ELONGATION < 1.0 or node.LENGTH_PAD < 1.0 or node.WIDTH_PAD < 1.0:
        raise ValueError(
            "MODEL.RETINAMASK.ORIENTED.MIN_ELONGATION, LENGTH_PAD and WIDTH_PAD must be >= 1, got "
            f"{node.MIN_ELONGATION}, {node.LENGTH_PAD}, {node.WIDTH_PAD}"
        )
    return {
        "frame_head": OrientedFrameHead(
            in_channels=channels,
            input_size=head_cfg.POOLER_RESOLUTION,
            conv_dim=node.HEAD_CONV_DIM,
            min_elongation=node.MIN_ELONGATION,
            length_pad=node.LENGTH_PAD,
            width_pad=node.WIDTH_PAD,
            min_width_ratio=node.MIN_WIDTH_RATIO,
            loss_weight=node.LOSS_WEIGHT,
        ),
        "oriented_pooler": OrientedPooler(
            output_size=head_cfg.POOLER_RESOLUTION,
            scales=[1.0 / 2**k for k in range(pooler.min_level, pooler.max_level + 1)],
            sampling_ratio=head_cfg.POOLER_SAMPLING_RATIO,
            canonical_box_size=pooler.canonical_box_size,
            canonical_level=pooler.canonical_level,
        ),
    }


def _with_one_class_count(cfg: CfgNode) -> CfgNode:
    """``cfg`` with ``MODEL.ROI_HEADS.NUM_CLASSES`` (which detectron2's mask heads read) set to
    ``MODEL.RETINANET.NUM_CLASSES``, RetinaMask's one class count."""
    if cfg.MODEL.ROI_HEADS.NUM_CLASSES == cfg.MODEL.RETINANET.NUM_CLASSES:
        return cfg
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = cfg.MODEL.RETINANET.NUM_CLASSES
    return cfg


def _fast_layout(pooled: Tensor) -> Tensor:
    """``pooled`` in the memory layout the mask head runs fastest in: channels-last on CPU.

    oneDNN runs the head's convolutions and deconvolution faster in that layout, in training
    and inference (``benchmarks.timing.profile_model`` shows it), with the same outputs up to float
    rounding. Other devices keep detectron2's layout (not measured there).
    """
    if pooled.device.type != "cpu":
        return pooled
    return pooled.contiguous(memory_format=torch.channels_last)
