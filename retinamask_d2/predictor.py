"""A predictor for Python code: images as arrays (BGR or RGB) or file paths, one or many at once.

detectron2's ``DefaultPredictor`` takes one BGR array and returns ``{"instances": ...}`` on the
model's device. ``RetinaMaskPredictor`` keeps that (it is a subclass, built the same way from a
config) and adds ``predict`` / ``predict_batch``, which return ``Instances`` on the CPU.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances
from PIL import Image, ImageOps

from retinamask_d2.checkpoint.checked import CheckedCheckpointer
from retinamask_d2.config import add_retinamask_config
from retinamask_d2.data.classes import model_metadata
from retinamask_d2.data.image_io import (
    ImageReadError,
    SizeLimits,
    channels_first_hint,
    check_format,
    pil_to_rgb,
    read_image,
    to_uint8_3channel,
)

logger = logging.getLogger(__name__)

ImageLike = np.ndarray | str | os.PathLike | Image.Image


def load_config(
    config_file: str | os.PathLike, weights: str | os.PathLike | None = None, opts: Sequence = ()
) -> CfgNode:
    """The config in ``config_file`` (e.g. the config.yaml that training writes) with RetinaMask's
    keys known, then ``weights`` as MODEL.WEIGHTS and ``KEY VALUE`` ``opts``."""
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(config_file))
    if weights is not None:
        cfg.MODEL.WEIGHTS = str(weights)
    cfg.merge_from_list(list(opts))
    return cfg


class RetinaMaskPredictor(DefaultPredictor):
    """Build the model of ``cfg``, load ``cfg.MODEL.WEIGHTS`` and predict instances.

    Images are resized as ``cfg.INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` say; results come back
    at each image's own size. ``metadata`` (class names, dataset category ids) is the model's,
    see :func:`model_metadata`.

    Example::

        predictor = RetinaMaskPredictor(load_config("config.yaml", "model_final.pth"))
        instances = predictor.predict("photo.jpg")
        masks = instances.pred_masks  # (N, H, W) bool
        many = predictor.predict_batch([rgb_a, rgb_b], format="RGB")

    ``confidence_threshold`` keeps only detections scoring at least that, and the model computes
    boxes and masks for those only (the instances are the same as filtering afterwards).
    ``precision`` "bf16" or "fp16" runs the model under autocast in that type (fp16 on a GPU).

    The weights must fit the model: a checkpoint of another architecture or class count is
    refused with a ``CheckpointError`` listing what does not match. Images outside
    ``INPUT.MAX_IMAGE_MEGAPIXELS`` / ``INPUT.MIN_IMAGE_SIDE`` raise an ``ImageReadError``
    naming them.
    """

    def __init__(
        self,
        cfg: CfgNode,
        confidence_threshold: float | None = None,
        precision: str = "fp32",
    ):
        if confidence_threshold is not None:
            cfg = with_confidence_threshold(cfg, confidence_threshold)
        # DefaultPredictor builds the model; the weights load here, checked against it.
        super().__init__(_without_weights(cfg))
        self.cfg = cfg.clone()
        CheckedCheckpointer(self.model, fit="inference").load(cfg.MODEL.WEIGHTS)
        self.metadata = model_metadata(cfg)
        self.size_limits = SizeLimits.from_config(cfg, training=False)
        self.autocast = autocast_context(cfg.MODEL.DEVICE, precision)

    def predict(self, image: ImageLike, format: str = "BGR") -> Instances:
        """Instances of one image: a path, a PIL image, or an array whose channels are in
        ``format``.

        ``format`` ("BGR", as OpenCV reads, or "RGB", as Pillow and matplotlib) only applies to
        arrays; files and PIL images are read as the demo reads them (EXIF orientation
        applied). Arrays may also be grayscale, have alpha or be 16-bit (see
        ``image_io.to_uint8_3channel``).
        """
        return self.predict_batch([image], format=format)[0]

    def predict_batch(self, images: Sequence[ImageLike], format: str = "BGR") -> list[Instances]:
        """Instances of each image, from one forward pass over all of them (pass a chunk at a
        time to bound memory). Raises ``image_io.ImageReadError`` naming the bad image."""
        check_format(format)
        if isinstance(images, (np.ndarray, str, os.PathLike, Image.Image)):
            raise TypeError("predict_batch takes a list of images; use predict for one image")
        inputs = [self._model_input(image, format, i) for i, image in enumerate(images)]
        if not inputs:
            return []
        with torch.no_grad(), self.autocast():
            outputs = self.model(inputs)
        return [output["instances"].to("cpu") for output in outputs]

    def _model_input(self, image: ImageLike, format: str, position: int) -> dict:
        name, hint = f"image {position} of the batch", ""
        if isinstance(image, (str, os.PathLike)):
            name = str(image)
            model_image = read_image(image, self.input_format, self.size_limits.max_megapixels)
        elif isinstance(image, Image.Image):
            rgb = pil_to_rgb(ImageOps.exif_transpose(image), name)
            model_image = rgb if self.input_format == "RGB" else rgb[:, :, ::-1]
        else:
            model_image = to_uint8_3channel(image, name)
            name, hint = f"{name} (shape {np.shape(image)})", channels_first_hint(np.shape(image))
            if format != self.input_format:
                model_image = model_image[:, :, ::-1]
        height, width = model_image.shape[:2]
        problem = self.size_limits.problem(width, height)
        if problem:
            raise ImageReadError(f"{name}: {problem}{hint}")
        resized = self.aug.get_transform(model_image).apply_image(model_image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32))
        return {"image": tensor, "height": height, "width": width}


def _without_weights(cfg: CfgNode) -> CfgNode:
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = ""
    return cfg


def with_confidence_threshold(cfg: CfgNode, threshold: float) -> CfgNode:
    """``cfg`` whose model keeps only detections scoring at least ``threshold`` and gives masks
    to those only.

    Raising RetinaNet's (and Mask R-CNN's) test score threshold keeps the same detections as
    filtering afterwards: NMS only lets a detection suppress lower-scoring ones, and the
    per-level candidate cap and the detection cap keep the highest scores.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"confidence threshold must be in [0, 1], got {threshold}")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = threshold
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = threshold
    cfg.MODEL.RETINAMASK.TEST_MASK_SCORE_THRESH = threshold
    cfg.freeze()
    return cfg


# Inference precisions: autocast dtypes (training precision is engine/amp.py).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(device: str | torch.device, precision: str):
    """A factory of the context to run the model in: nothing for "fp32", else autocast to
    ``precision`` ("bf16" or "fp16") on ``device``'s type.

    Autocast keeps detectron2's and torchvision's precision-sensitive steps (box decoding,
    RoIAlign, NMS) in float32 and runs convolutions in the lower precision, so no model code
    needs to change. fp16 is for GPUs; CPUs run bf16 far faster.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext
    device_type = torch.device(device).type
    return partial(torch.autocast, device_type=device_type, dtype=dtype)
