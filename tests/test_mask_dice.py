"""The Dice term of the mask loss, on hand-made RoIs whose targets are known exactly."""

import torch
from detectron2.structures import BitMasks, Boxes, Instances

from retinamask_d2.modeling.mask_dice import mask_dice_loss


def _rois(gt_class: int) -> Instances:
    # One 4 x 4 image whose GT mask is its left half; the RoI is the whole image, so the target
    # cropped to a 4 x 4 grid is that mask itself.
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[:, :, :2] = True
    rois = Instances((4, 4), proposal_boxes=Boxes(torch.tensor([[0.0, 0.0, 4.0, 4.0]])))
    rois.gt_classes = torch.tensor([gt_class])
    rois.gt_masks = BitMasks(mask)
    return rois


def test_dice_of_the_gt_class_by_hand():
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 0] = 20.0  # another class's channel: must not count
    # p = 0.5 everywhere: sum(p t) = 4, sum(p) = 8, sum(t) = 8 -> 1 - (2*4 + 1) / (8 + 8 + 1)
    torch.testing.assert_close(mask_dice_loss(logits, [_rois(gt_class=1)]), torch.tensor(8 / 17))
    # A perfect mask of the GT class: p = t -> 1 - (16 + 1) / (16 + 1) = 0 (up to sigmoid(20)).
    logits[:, 1] = -20.0
    logits[:, 1, :, :2] = 20.0
    assert mask_dice_loss(logits, [_rois(gt_class=1)]) < 1e-6


def test_class_agnostic_logits_and_no_rois():
    logits = torch.zeros(1, 1, 4, 4, requires_grad=True)
    loss = mask_dice_loss(logits, [_rois(gt_class=2)])
    torch.testing.assert_close(loss, torch.tensor(8 / 17))
    loss.backward()
    # Raising a background pixel's probability worsens Dice, raising an object pixel's helps it.
    assert logits.grad[0, 0, 0, 3] > 0 > logits.grad[0, 0, 0, 0]
    empty = Instances((4, 4), proposal_boxes=Boxes(torch.zeros(0, 4)))
    none = mask_dice_loss(torch.zeros(0, 1, 4, 4, requires_grad=True), [empty])
    assert none.item() == 0.0 and none.requires_grad
