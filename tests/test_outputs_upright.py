"""Upright cut-outs: a long tilted object becomes a straight strip of its own width and length."""

import numpy as np
import pytest
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances
from pycocotools import mask as mask_util

from retinamask_d2.visualization.cutouts import make_cutouts

WIDTH, LENGTH = 6, 80
COLOUR = (200, 40, 90)


def _bar(angle_deg: float, size: int = 128) -> np.ndarray:
    """(size, size) mask of a WIDTH x LENGTH bar centred in the image, rasterised exactly."""
    t = np.radians(angle_deg)
    u, v = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
    centre = np.array([size / 2, size / 2])
    corners = [
        centre + a * u * LENGTH / 2 + b * v * WIDTH / 2
        for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]
    rle = mask_util.frPyObjects([np.concatenate(corners).tolist()], size, size)
    return mask_util.decode(mask_util.merge(rle)).astype(bool)


def _cutout(mask: np.ndarray):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (*mask.shape, 3), dtype=np.uint8)  # background: channels <= 120
    image[mask] = COLOUR
    instances = Instances(mask.shape)
    instances.pred_masks = torch.as_tensor(mask[None])
    instances.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    instances.pred_classes = torch.tensor([0])
    instances.scores = torch.tensor([0.9])
    (upright,) = make_cutouts(image, instances, Metadata(name="upright"), upright=True)
    (boxed,) = make_cutouts(image, instances, Metadata(name="upright"))
    return upright, boxed


@pytest.mark.parametrize("angle", [0.0, 90.0, 3.0, 10.0, 30.0, 45.0, -47.0, 120.0])
def test_a_tilted_bar_comes_out_straight_with_its_width_and_length(angle):
    upright, boxed = _cutout(_bar(angle))
    height, length = upright.rgba.shape[:2]
    assert abs(height - WIDTH) <= 1
    assert abs(length - LENGTH) <= 1
    alpha = upright.rgba[..., 3]
    assert set(np.unique(alpha)) <= {0, 255}
    # Background-free: every opaque pixel is the bar's, the strip is nearly all opaque.
    assert (upright.rgba[alpha == 255, :3] == COLOUR).all()
    assert (upright.rgba[alpha == 0, :3] == 0).all()
    assert (alpha == 255).mean() > 0.8
    if 20 <= angle % 90 <= 70:  # a tilted bar's box is mostly background; the strip is not
        assert (boxed.rgba[..., 3] == 255).mean() < 0.5


def test_upright_exact_for_an_axis_aligned_bar():
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:35, 20:27] = True  # vertical, 7 x 30
    upright, boxed = _cutout(mask)
    assert upright.rgba.shape[:2] == (7, 30)
    assert (upright.rgba[..., 3] == 255).all()
    assert boxed.rgba.shape[:2] == (30, 7) and boxed.angle == 0.0
    assert upright.angle in (90.0, -90.0)
