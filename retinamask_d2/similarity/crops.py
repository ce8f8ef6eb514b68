"""The picture of one object that an embedder sees, cut four ways.

``box`` is what box-based tools embed (the detection's box, background included); ``box+context``
the box grown by a margin; ``mask`` the object's pixels only, on a neutral background, in its
mask's bounding box; ``upright`` the same turned so that its long axis is horizontal
(:func:`~retinamask_d2.visualization.cutouts.upright_cutout`): the model's own axis where the
instances have ``pred_frames`` (oriented mask RoIs), the mask's minimum-area rectangle's else.
Comparing one embedder across the four modes separates what background removal and uprighting
each contribute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from detectron2.structures import Instances

from retinamask_d2.visualization.cutouts import frame_angles, upright_cutout

CROP_MODES = ("box", "box+context", "mask", "upright")
# Grey of the background that replaces everything outside the mask: the middle of the range,
# as far from black and white objects as a single value can be.
NEUTRAL_GREY = 128
# How far ``box+context`` grows the box on each side, as a fraction of its width / height.
CONTEXT_MARGIN = 0.25


@dataclass
class ObjectCrop:
    """An object's crop: ``rgb`` (h, w, 3) uint8 and ``valid`` (h, w) bool, the pixels that
    describe it (the mask in ``mask``/``upright`` modes, the whole crop in box modes)."""

    rgb: np.ndarray
    valid: np.ndarray
    angle: float = 0.0  # degrees the object was turned to lie upright (``upright`` only)


def crop_object(
    image_rgb: np.ndarray,
    mask: np.ndarray,
    box: np.ndarray | tuple,
    mode: str,
    angle: float | None = None,
) -> ObjectCrop | None:
    """The crop of the object with ``mask`` ((H, W) bool) and ``box`` (x0, y0, x1, y1 pixels)
    in ``image_rgb`` ((H, W, 3) uint8) for crop ``mode``; None when nothing is left (an empty
    mask in mask modes, a box of no pixel in box modes). ``angle`` (degrees, ``upright`` only):
    the object's long axis, as ``upright_cutout`` takes it; None: its mask's."""
    if mode not in CROP_MODES:
        raise ValueError(f"crop mode must be one of {CROP_MODES}, got {mode!r}")
    height, width = mask.shape
    if mode in ("box", "box+context"):
        x0, y0, x1, y1 = (float(v) for v in box)
        if mode == "box+context":
            dx, dy = (x1 - x0) * CONTEXT_MARGIN, (y1 - y0) * CONTEXT_MARGIN
            x0, y0, x1, y1 = x0 - dx, y0 - dy, x1 + dx, y1 + dy
        c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
        c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
        if c1 <= c0 or r1 <= r0:
            return None
        rgb = np.ascontiguousarray(image_rgb[r0:r1, c0:c1])
        return ObjectCrop(rgb, np.ones(rgb.shape[:2], dtype=bool))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    if mode == "mask":
        valid = mask[r0:r1, c0:c1]
        rgb = np.full((r1 - r0, c1 - c0, 3), NEUTRAL_GREY, dtype=np.uint8)
        rgb[valid] = image_rgb[r0:r1, c0:c1][valid]
        return ObjectCrop(rgb, valid.copy())
    rgba, angle = upright_cutout(image_rgb[r0:r1, c0:c1], mask[r0:r1, c0:c1], angle)
    valid = rgba[..., 3] > 0
    rgb = np.where(valid[..., None], rgba[..., :3], np.uint8(NEUTRAL_GREY))
    return ObjectCrop(np.ascontiguousarray(rgb), valid, angle)


def instance_crops(
    image_rgb: np.ndarray, instances: Instances, mode: str
) -> tuple[list[ObjectCrop], list[int]]:
    """The ``mode`` crops of the ``instances`` (on the CPU, at the image's size) whose mask has
    a pixel, and their positions among the instances. Upright crops follow ``pred_frames``'
    angles when the instances have them."""
    masks = np.asarray(instances.pred_masks, dtype=bool)
    boxes = instances.pred_boxes.tensor.numpy()
    angles = frame_angles(instances)
    crops, kept = [], []
    for i, (mask, box) in enumerate(zip(masks, boxes)):
        crop = crop_object(image_rgb, mask, box, mode, angles[i]) if mask.any() else None
        if crop is not None:
            crops.append(crop)
            kept.append(i)
    return crops, kept


def upright_variants(crop: ObjectCrop) -> list[ObjectCrop]:
    """The four views of an upright crop that leave its long side horizontal: as it is,
    mirrored left-right, mirrored top-bottom and turned by 180°. Uprighting fixes the long
    axis but not which end is which nor which face is up; an embedding averaged over these
    views does not depend on either."""
    views = []
    for flip_rows, flip_cols in ((False, False), (False, True), (True, False), (True, True)):
        rgb, valid = crop.rgb, crop.valid
        if flip_rows:
            rgb, valid = rgb[::-1], valid[::-1]
        if flip_cols:
            rgb, valid = rgb[:, ::-1], valid[:, ::-1]
        views.append(ObjectCrop(np.ascontiguousarray(rgb), np.ascontiguousarray(valid), crop.angle))
    return views
