"""detectron2's ``DatasetMapper`` reading images with the project's reader.

detectron2's ``read_image`` clips 16-bit images to white and names no file when one is
truncated; training and evaluation would then see other pixels than the demo and the predictor.
:class:`ImageIOMapper` reads with :func:`retinamask_d2.data.image_io.read_image` and hands the array
to detectron2's own ``DatasetMapper.__call__`` (augmentations, annotations, everything else),
which has no hook for it: its module-level ``read_image`` is swapped for the length of the call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numpy as np
from detectron2.config import configurable
from detectron2.data import DatasetMapper, detection_utils

from retinamask_d2.data.image_io import ImageReadError, SizeLimits, read_image

# Formats the project's reader gives; others (e.g. "L", "YUV-BT.601") stay with detectron2's.
PROJECT_FORMATS = ("BGR", "RGB")
_SWAP_LOCK = threading.Lock()


class ImageIOMapper(DatasetMapper):
    """``DatasetMapper`` whose image comes from the project's reader (16-bit scaled, alpha
    flattened, EXIF applied). An image whose decoded size is not the dataset's, that is outside
    the config's size limits (datasets not checked before training), or that cannot be decoded,
    raises :class:`ImageReadError` naming the file."""

    @configurable
    def __init__(self, is_train: bool = True, *, size_limits: SizeLimits, **kwargs):
        super().__init__(is_train, **kwargs)
        self.size_limits = size_limits

    @classmethod
    def from_config(cls, cfg, is_train: bool = True) -> dict:
        ret = super().from_config(cfg, is_train)
        ret["size_limits"] = SizeLimits.from_config(cfg, training=is_train)
        return ret

    def __call__(self, dataset_dict: dict) -> dict:
        if self.image_format not in PROJECT_FORMATS or "sem_seg_file_name" in dataset_dict:
            return super().__call__(dataset_dict)  # the swap below would also feed sem_seg
        file_name = dataset_dict["file_name"]
        image = read_image(file_name, self.image_format, self.size_limits.max_megapixels)
        self.size_limits.check(image.shape[1], image.shape[0], file_name)
        expected = (dataset_dict.get("height"), dataset_dict.get("width"))
        if None not in expected and image.shape[:2] != expected:
            raise ImageReadError(
                f"{file_name}: decoded as {image.shape[1]}x{image.shape[0]} (EXIF orientation "
                f"applied), the dataset says {expected[1]}x{expected[0]}"
            )
        with _detectron2_reads(image):
            return super().__call__(dataset_dict)


@contextlib.contextmanager
def _detectron2_reads(image: np.ndarray) -> Iterator[None]:
    """Make detectron2's ``read_image`` return ``image`` inside the block (one thread at a time;
    data-loader workers are processes, each with its own copy)."""
    with _SWAP_LOCK:
        original = detection_utils.read_image
        detection_utils.read_image = lambda *args, **kwargs: image
        try:
            yield
        finally:
            detection_utils.read_image = original
