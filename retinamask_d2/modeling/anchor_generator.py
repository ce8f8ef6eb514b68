"""Anchors with the shapes of the official RetinaMask code (maskrcnn-benchmark, from Detectron)."""

import math
from collections.abc import Sequence

import torch
from detectron2.modeling.anchor_generator import (
    ANCHOR_GENERATOR_REGISTRY,
    BufferList,
    DefaultAnchorGenerator,
)


def official_cell_anchors(
    stride: int, sizes: Sequence[float], aspect_ratios: Sequence[float]
) -> torch.Tensor:
    """The official cell anchors of one level, in the official order and box convention.

    As ``generate_anchors`` in maskrcnn-benchmark: for each aspect ratio (height / width), the
    ``stride`` x ``stride`` window gets the rounded width ``round(sqrt(stride**2 / ratio))`` and
    height ``round(width * ratio)``; then each size scales it by ``size / stride``. So the shapes
    differ from ``sqrt(size**2 / ratio)`` by up to 6 % for ratios other than 1. Rows are
    ratio-major (``ratio_index * len(sizes) + size_index``); boxes are ``(x1, y1, x2, y2)`` with
    inclusive ends (width ``x2 - x1 + 1``) around the centre ``(stride - 1) / 2``.
    """
    centre = (stride - 1) / 2
    rows = []
    for ratio in aspect_ratios:
        base_w = round(math.sqrt(stride * stride / ratio))
        base_h = round(base_w * ratio)
        for size in sizes:
            w, h = base_w * (size / stride), base_h * (size / stride)
            half_w, half_h = (w - 1) / 2, (h - 1) / 2
            rows.append([centre - half_w, centre - half_h, centre + half_w, centre + half_h])
    return torch.tensor(rows, dtype=torch.float64).float()


@ANCHOR_GENERATOR_REGISTRY.register()
class RetinaMaskOfficialAnchorGenerator(DefaultAnchorGenerator):
    """detectron2's anchor generator with the official code's rounded anchor shapes.

    A model trained by the official code regresses its boxes from these shapes, so its converted
    weights need them; ``DefaultAnchorGenerator``'s unrounded shapes change its decoded boxes by
    up to 6 % in width and height. The anchors stay in detectron2's order (size-major within a
    location) and box convention (centred cell anchors, ``x2 - x1`` wide; use
    ``ANCHOR_GENERATOR.OFFSET: 0.5`` for the official centres, half a stride into each cell).
    """

    def _calculate_anchors(self, sizes, aspect_ratios):
        # Overrides a private method that detectron2 v0.6 and main both call from __init__,
        # after self.strides is set: the rounding depends on the stride, which the public
        # generate_cell_anchors is not given.
        cells = []
        for stride, level_sizes, ratios in zip(self.strides, sizes, aspect_ratios):
            official = official_cell_anchors(stride, level_sizes, ratios).double()
            w = official[:, 2] - official[:, 0] + 1
            h = official[:, 3] - official[:, 1] + 1
            centred = torch.stack([-w / 2, -h / 2, w / 2, h / 2], dim=1)
            # official row r * len(sizes) + s becomes detectron2 row s * len(ratios) + r
            order = centred.view(len(ratios), len(level_sizes), 4).transpose(0, 1)
            cells.append(order.reshape(-1, 4).float())
        return BufferList(cells)
