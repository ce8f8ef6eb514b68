"""Predictions drawn on their image with detectron2's Visualizer."""

from __future__ import annotations

import math

import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.structures import Instances
from detectron2.utils.visualizer import ColorMode, Visualizer


def draw_instances(
    image_rgb: np.ndarray, instances: Instances, metadata: Metadata, min_long_side: int = 512
) -> np.ndarray:
    """The image with masks, boxes, class names and scores drawn on it (RGB uint8).

    An image whose long side is under ``min_long_side`` is drawn enlarged by the smallest whole
    factor that reaches it (128 px: 4x): at its own size, the labels would cover the objects.
    """
    scale = max(1, math.ceil(min_long_side / max(image_rgb.shape[:2])))
    visualizer = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    return visualizer.draw_instance_predictions(instances).get_image()
