"""Upright cut-outs: a long tilted object becomes a straight strip of its own width and length."""

import numpy as np
import pytest
import torch
from detectron2.data.catalog import Metadata
from detectron2.structures import Boxes, Instances
from pycocotools import mask as mask_util

from retinamask_d2.visualization.cutouts import make_cutouts, upright_cutout

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


def _image_and_instance(mask: np.ndarray) -> tuple[np.ndarray, Instances]:
    """An image of ``mask``'s object in COLOUR on noise (channels <= 120), and its instance."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 120, (*mask.shape, 3), dtype=np.uint8)
    image[mask] = COLOUR
    instances = Instances(mask.shape)
    instances.pred_masks = torch.as_tensor(mask[None])
    instances.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 1.0, 1.0]]))
    instances.pred_classes = torch.tensor([0])
    instances.scores = torch.tensor([0.9])
    return image, instances


def _cutout(mask: np.ndarray):
    image, instances = _image_and_instance(mask)
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


def _cutout_with_frame_angle(mask: np.ndarray, angle_deg: float):
    """The upright cut-out of ``mask``'s object when the instance has ``pred_frames`` with
    that angle (degrees, image axes: from x towards y, down)."""
    image, instances = _image_and_instance(mask)
    frame = [mask.shape[1] / 2, mask.shape[0] / 2, LENGTH, WIDTH, np.radians(angle_deg)]
    instances.pred_frames = torch.tensor([frame])
    (upright,) = make_cutouts(image, instances, Metadata(name="upright"), upright=True)
    return upright


@pytest.mark.parametrize("angle", [30.0, -30.0, 0.0, 3.0, -47.0, 60.0, -89.0])
def test_the_frame_angle_lays_a_tilted_bar_flat_as_the_min_area_rectangle_does(angle):
    # The frame's angle is that of the bar's long side in image axes (y down): turned by it, a
    # bar at +30 deg (clockwise on screen) comes out a horizontal strip of its width, and the
    # same as the min-area rectangle's cut-out.
    mask = _bar(angle)
    upright = _cutout_with_frame_angle(mask, angle)
    reference, _ = _cutout(mask)
    assert upright.angle == pytest.approx(angle)
    height, length = upright.rgba.shape[:2]
    assert abs(height - WIDTH) <= 1 and abs(length - LENGTH) <= 1
    assert abs(height - reference.rgba.shape[0]) <= 1
    assert abs(length - reference.rgba.shape[1]) <= 1
    assert upright.angle == pytest.approx(reference.angle, abs=1.0)
    alpha = upright.rgba[..., 3]
    assert (upright.rgba[alpha == 255, :3] == COLOUR).all() and (alpha == 255).mean() > 0.8


def test_the_frame_angle_is_used_as_given_and_nothing_is_cut():
    # The wrong sign turns a 30 deg bar to 60 deg, not flat; another angle than the mask's is
    # still the one used (the model's). Either way the whole object is in the cut-out: its
    # area is the mask's, to the resampling's edge pixels.
    mask = _bar(30.0)
    area = int(mask.sum())
    for given in (-30.0, 25.0, 73.0, -89.0):
        upright = _cutout_with_frame_angle(mask, given)
        assert upright.angle == pytest.approx(given, abs=1e-4)
        height, length = upright.rgba.shape[:2]
        tilt = np.radians(30.0 - given)  # the bar's angle once turned
        expected_height = LENGTH * abs(np.sin(tilt)) + WIDTH * abs(np.cos(tilt))
        assert abs(height - expected_height) <= 2
        assert abs(int((upright.rgba[..., 3] == 255).sum()) - area) <= 0.1 * area
    assert _cutout_with_frame_angle(mask, -30.0).rgba.shape[0] > 4 * WIDTH


def test_upright_cutout_turns_by_a_given_angle_about_the_mask():
    # A 7 x 30 vertical bar: 90 or -90 lay it flat at its exact size, the pixel grid kept.
    mask = np.zeros((40, 50), dtype=bool)
    mask[5:35, 20:27] = True
    image = np.zeros((40, 50, 3), dtype=np.uint8)
    image[mask] = COLOUR
    for angle in (90.0, -90.0):
        rgba, turned = upright_cutout(image, mask, angle)
        assert turned == angle and rgba.shape[:2] == (7, 30) and (rgba[..., 3] == 255).all()
    rgba, turned = upright_cutout(image, mask, 0.0)  # not turned: the mask's box
    assert turned == 0.0 and rgba.shape[:2] == (30, 7)
    rgba, turned = upright_cutout(image, mask)  # None: the min-area rectangle's angle
    assert rgba.shape[:2] == (7, 30) and turned in (90.0, -90.0)
