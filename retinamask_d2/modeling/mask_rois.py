"""Which RoIs train the mask head, and with which targets."""

import torch
from detectron2.modeling.matcher import Matcher
from detectron2.structures import Boxes, Instances, pairwise_iou

# Fields of the GT instances that their RoIs carry along when present (see OrientedFrameHead).
GT_FRAME_FIELDS = ("gt_frames", "gt_elongated")


def select_mask_training_rois(
    detections: list[Instances], gt_instances: list[Instances], matcher: Matcher
) -> list[Instances]:
    """Pair each image's detections and GT boxes with the GT instance they cover.

    The candidate RoIs of an image are its detections (clipped to the image, empty boxes dropped)
    followed by all its GT boxes, so every annotated image has positives even when no detection
    overlaps a GT. ``matcher`` labels a candidate positive (1) when its best IoU with a GT box
    reaches its threshold; only positives are returned, since only they contribute to the mask
    loss and RoIAlign's backward is costly. Each returned ``Instances`` has ``proposal_boxes``,
    ``gt_classes`` and ``gt_masks`` (the covered GT's), the fields ``mask_rcnn_loss`` reads.
    """
    rois_per_image = []
    for dets, gts in zip(detections, gt_instances):
        if len(gts) == 0:
            empty = gts.gt_boxes.tensor.new_zeros((0, 4))
            rois_per_image.append(
                Instances(
                    gts.image_size,
                    proposal_boxes=Boxes(empty),
                    gt_classes=torch.zeros(0, dtype=torch.int64, device=empty.device),
                )
            )
            continue
        if not gts.has("gt_masks"):
            raise ValueError(
                "RetinaMask needs instance masks to train: the ground truth of an image has "
                f"{len(gts)} boxes but no 'gt_masks'. Set MODEL.MASK_ON: True so that "
                "DatasetMapper loads the annotations' 'segmentation', and check that every "
                "annotation has one."
            )
        det_boxes = Boxes(dets.pred_boxes.tensor.detach().clone())
        det_boxes.clip(gts.image_size)
        det_boxes = det_boxes[det_boxes.nonempty()]
        candidates = Boxes.cat([det_boxes, gts.gt_boxes])
        matched_idxs, labels = matcher(pairwise_iou(gts.gt_boxes, candidates))
        positive = labels == 1
        covered = gts[matched_idxs[positive]]
        fields = {"gt_classes": covered.gt_classes, "gt_masks": covered.gt_masks}
        for name in GT_FRAME_FIELDS:  # oriented RoIs: each GT's frame, fitted once per image
            if gts.has(name):
                fields[name] = covered.get(name)
        rois_per_image.append(
            Instances(gts.image_size, proposal_boxes=candidates[positive], **fields)
        )
    return rois_per_image
