"""Oriented mask RoIs ("frames"): rotated rectangles that masks are learned and predicted in.

A frame is a row ``(cx, cy, w, h, theta)`` in image pixels: centre, the side along ``theta``,
the side across it, and ``theta`` in radians from the x axis towards the y axis (image axes,
y down, so a positive angle turns clockwise on screen; detectron2's ``RotatedBoxes`` angle is
``-degrees(theta)``). An axis-aligned box is the frame ``(cx, cy, w, h, 0)``.

Why: a thin tilted object is a 1-2 cell diagonal stripe of its box's 28 x 28 mask grid, which
the mask head learns poorly; in its own frame it fills the grid's rows. This module holds the
frame geometry only (fitting a frame to a mask, padding it, warping GT masks into it and
pasting masks back out of it); which frame each RoI gets is ``oriented_head.py``'s job and
pooling features over frames ``oriented_pooler.py``'s.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.structures import BitMasks, PolygonMasks, polygons_to_bitmask
from torch import Tensor


def box_frames(boxes: Tensor) -> Tensor:
    """(N, 5) frames of (N, 4) XYXY boxes: the boxes themselves, angle 0."""
    x0, y0, x1, y1 = boxes.unbind(1)
    zero = torch.zeros_like(x0)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, zero], dim=1)


def frame_axes(frames: Tensor) -> tuple[Tensor, Tensor]:
    """Unit vectors (N, 2) along (``w``) and across (``h``) each frame."""
    cos, sin = frames[:, 4].cos(), frames[:, 4].sin()
    return torch.stack([cos, sin], dim=1), torch.stack([-sin, cos], dim=1)


def frame_corners(frames: Tensor) -> Tensor:
    """(N, 4, 2) corners of each frame in image pixels."""
    along, across = frame_axes(frames)
    half_w = (frames[:, 2:3] / 2) * along
    half_h = (frames[:, 3:4] / 2) * across
    centre = frames[:, :2]
    signs = ((-1, -1), (1, -1), (1, 1), (-1, 1))
    return torch.stack([centre + a * half_w + b * half_h for a, b in signs], dim=1)


def frame_grid(frames: Tensor, side: int) -> Tensor:
    """(N, side, side, 2) image coordinates (x, y) of the cell centres of each frame's
    ``side`` x ``side`` grid; row i runs along the frame's ``w`` side, at ``v`` across it."""
    steps = (torch.arange(side, dtype=frames.dtype, device=frames.device) + 0.5) / side - 0.5
    along, across = frame_axes(frames)
    u = steps[None, None, :, None] * frames[:, None, None, 2:3] * along[:, None, None, :]
    v = steps[None, :, None, None] * frames[:, None, None, 3:4] * across[:, None, None, :]
    return frames[:, None, None, :2] + u + v


def fit_frames(masks: Tensor, boxes: Tensor, min_elongation: float) -> tuple[Tensor, Tensor]:
    """The frame of each object from its mask: its principal-axis rectangle where the object
    is elongated, its box where it is not.

    Args:
        masks: (G, Hm, Wm) masks of the objects rasterised inside ``boxes`` (pixel crops).
        boxes: (G, 4) XYXY boxes the masks cover (cell edges).
        min_elongation: see :func:`finish_frames`.

    Returns:
        frames (G, 5) and ``elongated`` (G,) bool, as :func:`finish_frames` returns them.

    The rectangle's direction is the principal axis of the mask's cells; its extents are those
    of the cells (their centres, plus half a cell) projected on the axis and across it. For a bar
    this is its minimum-area rectangle; unlike a rotating-calipers fit it runs batched in torch.
    """
    masks = masks.to(boxes.dtype)
    count, rows_count, cols_count = masks.shape
    if count == 0:
        return box_frames(boxes), torch.zeros(0, dtype=torch.bool, device=boxes.device)
    x0, y0, x1, y1 = boxes.unbind(1)
    bw, bh = x1 - x0, y1 - y0
    col_steps = (
        torch.arange(cols_count, dtype=boxes.dtype, device=boxes.device) + 0.5
    ) / cols_count
    row_steps = (
        torch.arange(rows_count, dtype=boxes.dtype, device=boxes.device) + 0.5
    ) / rows_count
    xs = x0[:, None] + col_steps[None] * bw[:, None]  # (G, Wm) cell centres
    ys = y0[:, None] + row_steps[None] * bh[:, None]  # (G, Hm)
    area = masks.sum((1, 2))
    cols, rows = masks.sum(1), masks.sum(2)  # per x, per y
    safe = area.clamp(min=1)
    mx, my = (cols * xs).sum(1) / safe, (rows * ys).sum(1) / safe
    dx, dy = xs - mx[:, None], ys - my[:, None]
    cxx = (cols * dx**2).sum(1) / safe
    cyy = (rows * dy**2).sum(1) / safe
    cxy = (masks * dy[:, :, None] * dx[:, None, :]).sum((1, 2)) / safe
    theta = 0.5 * torch.atan2(2 * cxy, cxx - cyy)
    cos, sin = theta.cos()[:, None, None], theta.sin()[:, None, None]
    inside = masks > 0
    lo_u, hi_u = _masked_extent(dx[:, None, :] * cos + dy[:, :, None] * sin, inside)
    lo_v, hi_v = _masked_extent(dy[:, :, None] * cos - dx[:, None, :] * sin, inside)
    # A cell reaches half its size beyond its centre, projected on each axis.
    cell_w, cell_h = bw / cols_count, bh / rows_count
    cos, sin = cos[:, 0, 0], sin[:, 0, 0]
    half_u = 0.5 * (cell_w * cos.abs() + cell_h * sin.abs())
    half_v = 0.5 * (cell_w * sin.abs() + cell_h * cos.abs())
    mid_u, mid_v = (hi_u + lo_u) / 2, (hi_v + lo_v) / 2
    fitted = torch.stack(
        [
            mx + mid_u * cos - mid_v * sin,
            my + mid_u * sin + mid_v * cos,
            hi_u - lo_u + 2 * half_u,
            hi_v - lo_v + 2 * half_v,
            theta,
        ],
        dim=1,
    )
    return finish_frames(fitted, area > 0, boxes, min_elongation)


def fit_polygon_rectangle(polygons: list[np.ndarray]) -> list[float] | None:
    """The rectangle (cx, cy, w, h, theta) :func:`fit_frames` fits, for one object given as
    COCO polygons, exactly: from the area moments of the polygons (Green's theorem) and the
    extents of their vertices, no rasteriser involved (on a 64-cell grid of its box a 3 px
    wide rod at 45 deg in a 200 px box would be one cell wide). None for a zero-area object.
    Plain numpy: it runs for every training RoI."""
    area = cx = cy = sxx = syy = sxy = 0.0
    origin = polygons[0][:2].astype(np.float64)
    points = []
    for polygon in polygons:
        p = polygon.astype(np.float64).reshape(-1, 2) - origin
        points.append(p)
        x, y = p[:, 0], p[:, 1]
        xn, yn = np.roll(x, -1), np.roll(y, -1)
        cross = x * yn - xn * y
        cross = cross if cross.sum() >= 0 else -cross  # each polygon counted positively
        area += cross.sum() / 2
        cx += ((x + xn) * cross).sum() / 6
        cy += ((y + yn) * cross).sum() / 6
        sxx += ((x * x + x * xn + xn * xn) * cross).sum() / 12
        syy += ((y * y + y * yn + yn * yn) * cross).sum() / 12
        sxy += ((x * yn + 2 * x * y + 2 * xn * yn + xn * y) * cross).sum() / 24
    if area <= 0:
        return None
    cx, cy = cx / area, cy / area
    theta = 0.5 * np.arctan2(
        2 * (sxy / area - cx * cy), (sxx / area - cx**2) - (syy / area - cy**2)
    )
    cos, sin = np.cos(theta), np.sin(theta)
    points = np.concatenate(points) - (cx, cy)
    u = points @ (cos, sin)
    v = points @ (-sin, cos)
    mid_u, mid_v = (u.max() + u.min()) / 2, (v.max() + v.min()) / 2
    return [
        origin[0] + cx + mid_u * cos - mid_v * sin,
        origin[1] + cy + mid_u * sin + mid_v * cos,
        u.max() - u.min(),
        v.max() - v.min(),
        theta,
    ]


def finish_frames(
    fitted: Tensor, valid: Tensor, boxes: Tensor, min_elongation: float
) -> tuple[Tensor, Tensor]:
    """Fitted rectangles (G, 5) made frames: turned a quarter where needed so that ``w >= h``,
    angle in [-pi/2, pi/2); a rectangle whose long side is below ``min_elongation`` times its
    short side (or not ``valid``) is replaced by its object's box, angle 0: a near-square object
    has no direction to follow. Returns the frames and whether each is elongated."""
    fitted = normalise_frames(fitted)
    elongated = valid & (fitted[:, 2] >= min_elongation * fitted[:, 3].clamp(min=1e-6))
    return torch.where(elongated[:, None], fitted, box_frames(boxes)), elongated


def normalise_frames(frames: Tensor) -> Tensor:
    """``frames`` (N, 5) as frames are kept: turned a quarter where ``w < h`` (sides swapped),
    angle wrapped into [-pi/2, pi/2). The same rectangles."""
    cx, cy, w, h, theta = frames.unbind(1)
    turn = w < h
    return torch.stack(
        [
            cx,
            cy,
            torch.where(turn, h, w),
            torch.where(turn, w, h),
            _wrap_angle(torch.where(turn, theta + math.pi / 2, theta)),
        ],
        dim=1,
    )


def scale_frames(frames: Tensor, scale: tuple) -> Tensor:
    """``frames`` (N, 5) of an image seen ``scale`` = (sx, sy) times larger: centres scaled per
    axis; the long side's direction (cos t, sin t) becomes (sx cos t, sy sin t), which gives the
    new angle, and each side is multiplied by the length its direction takes on (the short
    side's, (-sin t, cos t), becomes (-sx sin t, sy cos t)); then :func:`normalise_frames`.

    Exact for a uniform scale (sx = sy). Otherwise a tilted rectangle becomes a parallelogram,
    and this is the rectangle of its scaled long axis with its sides' scaled lengths: close while
    sx and sy are close, as resizing for the model keeps them (detectron2's
    ``ResizeShortestEdge`` keeps the aspect ratio up to the rounding of a side). ``sx`` and
    ``sy`` may be 0-d tensors (while tracing)."""
    sx, sy = scale
    cos, sin = frames[:, 4].cos(), frames[:, 4].sin()
    along_x, along_y = cos * sx, sin * sy
    across_x, across_y = -sin * sx, cos * sy
    scaled = torch.stack(
        [
            frames[:, 0] * sx,
            frames[:, 1] * sy,
            frames[:, 2] * torch.sqrt(along_x**2 + along_y**2),
            frames[:, 3] * torch.sqrt(across_x**2 + across_y**2),
            torch.atan2(along_y, along_x),
        ],
        dim=1,
    )
    return normalise_frames(scaled)


def _masked_extent(values: Tensor, inside: Tensor) -> tuple[Tensor, Tensor]:
    """Per object, the smallest and largest of ``values`` (G, R, R) where ``inside``; 0, 0
    for an empty mask."""
    inf = torch.finfo(values.dtype).max
    lo = torch.where(inside, values, values.new_tensor(inf)).flatten(1).amin(1)
    hi = torch.where(inside, values, values.new_tensor(-inf)).flatten(1).amax(1)
    empty = ~inside.flatten(1).any(1)
    return lo.masked_fill(empty, 0.0), hi.masked_fill(empty, 0.0)


def _wrap_angle(theta: Tensor) -> Tensor:
    """``theta`` in [-pi/2, pi/2): a frame turned by half a turn is the same frame. (A float
    remainder just below pi can round to pi itself: that end is turned back by pi.)"""
    wrapped = torch.remainder(theta + math.pi / 2, math.pi) - math.pi / 2
    return torch.where(wrapped >= math.pi / 2, wrapped - math.pi, wrapped)


def pad_frames(
    frames: Tensor, length_pad: float, width_pad: float, min_width_ratio: float
) -> Tensor:
    """``frames`` grown about their centres: ``w`` times ``length_pad``; ``h`` times
    ``width_pad`` but at least ``min_width_ratio`` of the new ``w``.

    Why the floor on the width: an angle error of d turns the ends of an object of length L
    by L/2 sin(d) across its frame; a width of at least ``min_width_ratio`` times the padded
    length keeps them inside up to d = asin(min_width_ratio * length_pad) (0.1 and 1.2: 7 deg).
    """
    length = frames[:, 2] * length_pad
    width = torch.maximum(frames[:, 3] * width_pad, length * min_width_ratio)
    return torch.cat([frames[:, :2], length[:, None], width[:, None], frames[:, 4:]], dim=1)


def warp_masks(gt_masks: PolygonMasks | BitMasks, frames: Tensor, side: int) -> Tensor:
    """(N, side, side) bool targets: each of the N GT masks seen in its frame's grid, what
    ``crop_and_resize`` is for axis-aligned boxes (same rasteriser for polygons, bilinear
    sampling of 2 x 2 points per cell and a 0.5 threshold for bitmasks)."""
    if isinstance(gt_masks, PolygonMasks):
        return _warp_polygons(gt_masks, frames, side)
    if isinstance(gt_masks, BitMasks):
        return _warp_bitmasks(gt_masks, frames, side)
    raise TypeError(
        "MODEL.RETINAMASK.MASK_ROI 'oriented' needs the GT masks as detectron2 PolygonMasks or "
        f"BitMasks (INPUT.MASK_FORMAT 'polygon' or 'bitmask'), got {type(gt_masks).__name__}"
    )


def _warp_polygons(gt_masks: PolygonMasks, frames: Tensor, side: int) -> Tensor:
    along, across = frame_axes(frames.detach().cpu().double())
    frames64 = frames.detach().cpu().double()
    targets = []
    for polygons, frame, e_u, e_v in zip(gt_masks.polygons, frames64, along, across):
        # Polygon points in the frame's grid units, origin at its corner (as crop_and_resize
        # shifts by the box's corner and scales by side / box size).
        cells = []
        for polygon in polygons:
            points = torch.from_numpy(polygon).double().reshape(-1, 2) - frame[:2]
            u = (points @ e_u / frame[2] + 0.5) * side
            v = (points @ e_v / frame[3] + 0.5) * side
            cells.append(torch.stack([u, v], dim=1).flatten().numpy())
        targets.append(torch.from_numpy(polygons_to_bitmask(cells, side, side)))
    if not targets:
        return torch.zeros((0, side, side), dtype=torch.bool, device=frames.device)
    return torch.stack(targets).to(device=frames.device)


def _warp_bitmasks(gt_masks: BitMasks, frames: Tensor, side: int) -> Tensor:
    masks = gt_masks.tensor.to(device=frames.device, dtype=torch.float32)
    if masks.shape[0] == 0:
        return torch.zeros((0, side, side), dtype=torch.bool, device=frames.device)
    height, width = masks.shape[1:]
    points = frame_grid(frames.detach().float(), 2 * side)
    scale = points.new_tensor([2.0 / width, 2.0 / height])
    sampled = F.grid_sample(masks[:, None], points * scale - 1, align_corners=False)
    return F.avg_pool2d(sampled, 2)[:, 0] >= 0.5


def paste_frame_masks(
    mask_probs: Tensor,
    frames: Tensor,
    scale: tuple[float, float],
    height: int,
    width: int,
    threshold: float = 0.5,
) -> Tensor:
    """(N, height, width) bool masks: each (M, M) map of ``mask_probs`` (N, 1, M, M) put back
    from its frame (N, 5, in the pixels of the image the model saw) into an output image that
    is ``scale`` = (sx, sy) times that size, and thresholded.

    Each output pixel centre is mapped back into its frame's grid and sampled bilinearly
    (``grid_sample``, align_corners False, zeros outside the grid), as detectron2's
    ``paste_masks_in_image`` does for boxes; only the pixels of the frame's bounding box are
    sampled, one mask at a time, as detectron2 does on the CPU. :func:`paste_frame_masks_whole`
    gives the same masks in one pass over the whole image, for tracing.
    """
    masks = torch.zeros((len(frames), height, width), dtype=torch.bool, device=frames.device)
    if len(frames) == 0:
        return masks
    corners = frame_corners(frames) * frames.new_tensor(scale)
    lows = corners.amin(1).floor().clamp(min=0)
    highs = corners.amax(1).ceil()
    for i in range(len(frames)):
        x0, y0 = int(lows[i, 0]), int(lows[i, 1])
        x1, y1 = min(int(highs[i, 0]), width), min(int(highs[i, 1]), height)
        if x1 <= x0 or y1 <= y0:
            continue
        xs = torch.arange(x0, x1, dtype=frames.dtype, device=frames.device)
        ys = torch.arange(y0, y1, dtype=frames.dtype, device=frames.device)
        grid = _pixel_grid(frames[i : i + 1], xs, ys, scale).to(mask_probs.dtype)
        pasted = F.grid_sample(mask_probs[i : i + 1], grid, align_corners=False)
        masks[i, y0:y1, x0:x1] = pasted[0, 0] >= threshold
    return masks


def paste_frame_masks_whole(
    mask_probs: Tensor,
    frames: Tensor,
    scale: tuple[float, float],
    height: Tensor | int,
    width: Tensor | int,
    threshold: float = 0.5,
) -> Tensor:
    """:func:`paste_frame_masks` in one ``grid_sample`` over the whole image for all masks: no
    Python loop or count, so that a trace holds for other images (N x H x W floats: for
    export, not for large images on the CPU)."""
    xs = torch.arange(width, dtype=frames.dtype, device=frames.device)
    ys = torch.arange(height, dtype=frames.dtype, device=frames.device)
    grid = _pixel_grid(frames, xs, ys, scale).to(mask_probs.dtype)
    return F.grid_sample(mask_probs, grid, align_corners=False)[:, 0] >= threshold


def _pixel_grid(frames: Tensor, xs: Tensor, ys: Tensor, scale: tuple[float, float]) -> Tensor:
    """(N, len(ys), len(xs), 2) ``grid_sample`` coordinates, in each frame's mask grid, of the
    centres of output pixels at columns ``xs`` and rows ``ys``."""
    along, across = frame_axes(frames)
    dx = (xs + 0.5)[None, None, :] / scale[0] - frames[:, 0, None, None]  # (N, 1, W)
    dy = (ys + 0.5)[None, :, None] / scale[1] - frames[:, 1, None, None]  # (N, H, 1)
    u = (dx * along[:, 0, None, None] + dy * along[:, 1, None, None]) * (
        2 / frames[:, 2, None, None]
    )
    v = (dx * across[:, 0, None, None] + dy * across[:, 1, None, None]) * (
        2 / frames[:, 3, None, None]
    )
    return torch.stack([u, v], dim=3)


class WarpedMasks:
    """GT masks to be seen in oriented frames, for detectron2's ``mask_rcnn_loss`` (and the Dice
    term), which read their targets through ``gt_masks.crop_and_resize(boxes, side)``.

    ``crop_and_resize`` ignores the boxes it is given and warps each mask into its own frame:
    the frame, not the box, is the RoI. This keeps detectron2's loss as it is (its targets,
    weights and accuracy metrics) instead of restating it for a second kind of RoI.
    """

    def __init__(self, masks: PolygonMasks | BitMasks, frames: Tensor):
        if len(masks) != len(frames):
            raise ValueError(f"{len(masks)} GT masks for {len(frames)} frames")
        self.masks = masks
        self.frames = frames
        self._warped: dict[int, Tensor] = {}  # per side: the loss and the Dice term share them

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, item) -> "WarpedMasks":
        index = item if not isinstance(item, int) else slice(item, item + 1)
        return WarpedMasks(self.masks[index], self.frames[index])

    def crop_and_resize(self, boxes: Tensor, side: int) -> Tensor:
        if side not in self._warped:
            self._warped[side] = warp_masks(self.masks, self.frames, side)
        return self._warped[side]
