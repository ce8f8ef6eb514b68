"""The paste benchmark compares like with like: its one-pass candidate pastes detectron2's masks
(``paste_masks_in_image``), pixels on the threshold to within float rounding aside."""

import sys
from pathlib import Path

import pytest
import torch
from detectron2.layers.mask_ops import paste_masks_in_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from paste_cost import paste_masks_one_pass, random_case  # noqa: E402  (a script folder)


@pytest.mark.parametrize("scale", ["synthetic_128", "coco_800x1333"])
@pytest.mark.parametrize("threshold", [0.3, 0.5])
def test_one_pass_paste_equals_detectron2s(scale, threshold):
    masks, boxes, shape = random_case(scale, 20, seed=0)
    expected = paste_masks_in_image(masks, boxes, shape, threshold)
    assert expected.any()
    assert torch.equal(paste_masks_one_pass(masks, boxes, shape, threshold), expected)


def _assert_same_but_on_the_threshold(masks, boxes, shape):
    expected = paste_masks_in_image(masks, boxes, shape)
    differ = paste_masks_one_pass(masks, boxes, shape) != expected
    soft = paste_masks_in_image(masks, boxes, shape, threshold=-1)  # 255 x probability, uint8
    assert (soft[differ] == 127).all()  # only where detectron2's probability rounds to 0.5
    assert int(differ.sum()) <= 0.01 * int(expected.sum())


def test_one_pass_paste_equals_detectron2s_for_saturated_masks_at_the_borders():
    """0/1 masks interpolate to exactly the threshold between cells; boxes touch the borders,
    are thinner than a pixel or larger than the mask's 28 cells."""
    g = torch.Generator().manual_seed(1)
    masks = (torch.rand(6, 28, 28, generator=g) > 0.5).float()
    boxes = torch.tensor(
        [
            [0.0, 0.0, 40.0, 30.0],
            [10.3, 5.7, 10.9, 60.2],
            [20.0, 20.0, 99.0, 77.0],
            [50.5, 0.0, 99.0, 12.25],
            [3.0, 70.0, 33.0, 77.0],
            [0.0, 0.0, 99.0, 77.0],
        ]
    )
    _assert_same_but_on_the_threshold(masks, boxes, (77, 99))
    assert paste_masks_one_pass(masks[:0], boxes[:0], (77, 99)).shape == (0, 77, 99)
