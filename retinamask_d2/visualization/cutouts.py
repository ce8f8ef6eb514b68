"""Each instance cut out of its image as an RGBA array: axis-aligned, or turned upright along the
angle of its ``pred_frames`` (the model's own, with oriented mask RoIs) or of its mask's
minimum-area rectangle.

The functions take the image as an (H, W, 3) uint8 RGB array and detectron2 ``Instances`` on the
CPU at that image's size (``pred_boxes``, ``scores``, ``pred_classes``, ``pred_masks``, and
``pred_frames`` when the model has them), as ``RetinaMaskPredictor`` returns them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cv2
import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.structures import Instances

from retinamask_d2.data.classes import class_name


@dataclass
class Cutout:
    """One instance cut out of its image: the mask's bounding box, alpha 0 outside the mask;
    or, upright, the instance turned by ``angle`` and cropped to its mask."""

    index: int  # position of the instance in the image's predictions (score order)
    class_name: str
    score: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) of the mask in the image
    rgba: np.ndarray  # (y1 - y0, x1 - x0, 4) uint8; upright: (short side, long side, 4)
    angle: float = 0.0  # degrees the instance was turned (counter-clockwise) to lie upright

    def file_name(self, prefix: str) -> str:
        """``<prefix>_<index>_<class>_<score>.png``, the class reduced to file-safe characters."""
        safe_class = re.sub(r"[^A-Za-z0-9.+-]+", "-", self.class_name).strip("-.") or "class"
        return f"{prefix}_{self.index:03d}_{safe_class}_{self.score:.3f}.png"


def make_cutouts(
    image_rgb: np.ndarray, instances: Instances, metadata: Metadata, upright: bool = False
) -> list[Cutout]:
    """One RGBA cut-out per instance whose mask has any pixel (empty masks give none).

    The RGB of pixels outside the mask is zeroed as well as their alpha, so nothing of the
    background remains in the file. With ``upright`` each instance is first turned so that its
    long axis is horizontal (:func:`upright_cutout`): a long tilted object becomes a straight
    strip, its width the strip's height. The long axis is the model's own where the instances
    have ``pred_frames`` (``MASK_ROI: "oriented"``: the angle of the frame each mask was
    predicted in), the long side of the mask's minimum-area rectangle otherwise.
    """
    masks = np.asarray(instances.pred_masks, dtype=bool)
    classes = instances.pred_classes.tolist()
    scores = instances.scores.tolist()
    angles = frame_angles(instances)
    cutouts = []
    for index, (mask, class_id, score) in enumerate(zip(masks, classes, scores)):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows) == 0:
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        crop_mask = mask[y0:y1, x0:x1]
        rgba = np.zeros((y1 - y0, x1 - x0, 4), dtype=np.uint8)
        rgba[crop_mask, :3] = image_rgb[y0:y1, x0:x1][crop_mask]
        rgba[crop_mask, 3] = 255
        box = (int(x0), int(y0), int(x1), int(y1))
        angle = 0.0
        if upright:
            rgba, angle = upright_cutout(image_rgb[y0:y1, x0:x1], crop_mask, angles[index])
        cutouts.append(Cutout(index, class_name(metadata, class_id), score, box, rgba, angle))
    return cutouts


def frame_angles(instances: Instances) -> list[float | None]:
    """Each instance's long axis in degrees, as :func:`upright_cutout` takes it: its
    ``pred_frames`` angle (oriented mask RoIs), None (the mask's own) without that field."""
    if not instances.has("pred_frames"):
        return [None] * len(instances)
    return np.degrees(np.asarray(instances.pred_frames, dtype=np.float64)[:, 4]).tolist()


def upright_cutout(
    image_rgb: np.ndarray, mask: np.ndarray, angle: float | None = None
) -> tuple[np.ndarray, float]:
    """The masked object turned so that its long axis is horizontal, cropped to the turned
    mask: (RGBA, angle in degrees it was turned, counter-clockwise on screen).

    ``angle`` (degrees) is the long axis' direction measured in image axes, from the x axis
    towards the y axis (down), as the angle of a frame (``pred_frames``) is: the object is
    turned by it about the mask's centre, and the output is sized from the turned mask's pixel
    extents, so that nothing is cut. None: the long side of the mask's minimum-area rectangle
    (``cv2.minAreaRect``).

    The mask's coverage is resampled bilinearly and kept where at least half covered, so a
    straight ``w``-px-wide object comes out ``w`` px high (to a pixel at oblique angles) and
    the alpha stays 0 or 255; colours are interpolated from the object's pixels only, so no
    background blends in at its edges.
    """
    margin = 2
    if angle is None:
        rotation, size, angle = _min_area_rotation(mask, margin)
    else:
        rotation, size = _rotation_about_centre(mask, float(angle), margin)
    # Normalised interpolation: the colours and the mask's coverage are resampled bilinearly
    # from the object's pixels only, the coverage thresholded at one half.
    weight = mask.astype(np.float32)
    coverage = cv2.warpAffine(weight, rotation, size, flags=cv2.INTER_LINEAR)
    colour = cv2.warpAffine(image_rgb * weight[..., None], rotation, size, flags=cv2.INTER_LINEAR)
    turned = coverage >= 0.5
    rgb = np.zeros((*turned.shape, 3), dtype=np.uint8)
    rgb[turned] = np.clip(np.rint(colour[turned] / coverage[turned, None]), 0, 255)
    rows, cols = np.flatnonzero(turned.any(axis=1)), np.flatnonzero(turned.any(axis=0))
    if len(rows) == 0:  # a mask of a pixel or two, too thin to keep half its coverage
        turned, rgb, angle = mask, image_rgb, 0.0
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop = turned[y0:y1, x0:x1]
    rgba = np.zeros((y1 - y0, x1 - x0, 4), dtype=np.uint8)
    rgba[crop, :3] = rgb[y0:y1, x0:x1][crop]
    rgba[crop, 3] = 255
    return rgba, angle


def _min_area_rotation(mask: np.ndarray, margin: int) -> tuple[np.ndarray, tuple[int, int], float]:
    """The ``warpAffine`` matrix and output size (w, h) that lay the long side of ``mask``'s
    minimum-area rectangle horizontal, ``margin`` px from the edges, and its angle (degrees)."""
    points = cv2.findNonZero(mask.astype(np.uint8))
    rect = cv2.minAreaRect(points)
    corners = cv2.boxPoints(rect)
    edges = [corners[1] - corners[0], corners[2] - corners[1]]
    dx, dy = max(edges, key=lambda e: float(np.hypot(*e)))
    angle = float(np.degrees(np.arctan2(dy, dx)))
    angle = (angle + 90.0) % 180.0 - 90.0  # the same axis, turned by at most 90 degrees
    # The rectangle is that of the pixel centres. Those of an axis-aligned object lie half a
    # pixel inside its edges, those of a tilted one (a staircase) about on them: the edges are
    # put on pixel boundaries, so that a straight object maps onto whole pixels.
    (cx, cy), (w, h) = rect[0], rect[1]
    edge = 1.0 if angle % 90.0 == 0.0 else 0.0
    long_side, short_side = max(w, h) + edge, min(w, h) + edge
    rotation = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    rotation[:, 2] += (margin + (long_side - 1) / 2 - cx, margin + (short_side - 1) / 2 - cy)
    size = (int(np.ceil(long_side)) + 2 * margin, int(np.ceil(short_side)) + 2 * margin)
    return rotation, size, angle


def _rotation_about_centre(
    mask: np.ndarray, angle: float, margin: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """The ``warpAffine`` matrix and output size (w, h) that turn ``mask`` by ``angle`` degrees
    (counter-clockwise on screen, ``cv2.getRotationMatrix2D``'s sense) about its centre and
    hold the whole turned mask, ``margin`` px from the edges."""
    ys, xs = np.nonzero(mask)
    points = np.stack([xs, ys], axis=1).astype(np.float64)  # pixel centres, OpenCV's convention
    lo, hi = points.min(0), points.max(0)
    centre = (lo + hi) / 2
    rotation = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, 1.0)
    turned = points @ rotation[:, :2].T + rotation[:, 2]
    lo, hi = turned.min(0), turned.max(0)
    # A pixel reaches half a pixel beyond its centre along each image axis, turned: at most
    # 0.71 px, so one pixel of border more than the margin holds it. The first pixel centre goes
    # onto a whole pixel, so that a quarter turn maps pixels onto pixels.
    border = margin + 1
    rotation[:, 2] += border - lo
    size = [int(np.ceil(v)) + 1 + 2 * border for v in hi - lo]
    return rotation, (size[0], size[1])
