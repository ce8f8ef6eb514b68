"""A predictor for Python code: images as arrays (BGR or RGB) or file paths, one or many at once.

detectron2's ``DefaultPredictor`` takes one BGR array and returns ``{"instances": ...}`` on the
model's device. ``RetinaMaskPredictor`` keeps that (it is a subclass, built the same way from a
config) and adds ``predict`` / ``predict_batch``, which return ``Instances`` on the CPU.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances

from retinamask_d2.config import add_retinamask_config
from retinamask_d2.data.config import add_dataset_config, register_datasets_from_config
from retinamask_d2.image_io import (
    DEFAULT_MAX_MEGAPIXELS,
    check_format,
    read_image,
    to_uint8_3channel,
)

logger = logging.getLogger(__name__)

ImageLike = np.ndarray | str | os.PathLike


def load_config(
    config_file: str | os.PathLike, weights: str | os.PathLike | None = None, opts: Sequence = ()
) -> CfgNode:
    """The config in ``config_file`` (e.g. the config.yaml that training writes) with RetinaMask's
    and the dataset keys known, then ``weights`` as MODEL.WEIGHTS and ``KEY VALUE`` ``opts``."""
    cfg = get_cfg()
    add_retinamask_config(cfg)
    add_dataset_config(cfg)
    cfg.merge_from_file(str(config_file))
    if weights is not None:
        cfg.MODEL.WEIGHTS = str(weights)
    cfg.merge_from_list(list(opts))
    return cfg


class RetinaMaskPredictor(DefaultPredictor):
    """Build the model of ``cfg``, load ``cfg.MODEL.WEIGHTS`` and predict instances.

    Images are resized as ``cfg.INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST`` say; results come back
    at each image's own size. ``metadata`` (class names, dataset category ids) is that of
    ``cfg.DATASETS.TEST[0]``, see :func:`dataset_metadata`.

    Example::

        predictor = RetinaMaskPredictor(load_config("config.yaml", "model_final.pth"))
        instances = predictor.predict("photo.jpg")
        masks = instances.pred_masks  # (N, H, W) bool
        many = predictor.predict_batch([rgb_a, rgb_b], format="RGB")
    """

    def __init__(self, cfg: CfgNode, max_megapixels: float | None = DEFAULT_MAX_MEGAPIXELS):
        super().__init__(cfg)
        self.metadata = dataset_metadata(cfg)
        self.max_megapixels = max_megapixels

    def predict(self, image: ImageLike, format: str = "BGR") -> Instances:
        """Instances of one image: a path, or an array whose channels are in ``format``.

        ``format`` ("BGR", as OpenCV reads, or "RGB", as Pillow and matplotlib) only applies to
        arrays. Arrays may also be grayscale, have alpha or be 16-bit (see
        ``image_io.to_uint8_3channel``).
        """
        return self.predict_batch([image], format=format)[0]

    def predict_batch(self, images: Sequence[ImageLike], format: str = "BGR") -> list[Instances]:
        """Instances of each image, from one forward pass over all of them (pass a chunk at a
        time to bound memory). Raises ``image_io.ImageReadError`` naming the bad image."""
        check_format(format)
        if isinstance(images, (np.ndarray, str, os.PathLike)):
            raise TypeError("predict_batch takes a list of images; use predict for one image")
        inputs = [self._model_input(image, format, i) for i, image in enumerate(images)]
        if not inputs:
            return []
        with torch.no_grad():
            outputs = self.model(inputs)
        return [output["instances"].to("cpu") for output in outputs]

    def _model_input(self, image: ImageLike, format: str, position: int) -> dict:
        if isinstance(image, (str, os.PathLike)):
            model_image = read_image(image, self.input_format, self.max_megapixels)
        else:
            model_image = to_uint8_3channel(image, f"image {position} of the batch")
            if format != self.input_format:
                model_image = model_image[:, :, ::-1]
        height, width = model_image.shape[:2]
        resized = self.aug.get_transform(model_image).apply_image(model_image)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1), dtype=np.float32))
        return {"image": tensor, "height": height, "width": width}


def dataset_metadata(cfg: CfgNode) -> Metadata:
    """Metadata of ``cfg.DATASETS.TEST[0]`` (empty without one): its class names and the map from
    the dataset's category ids to the model's classes, for drawings and COCO results.

    A COCO-json dataset learns its categories only when it is loaded, which reads and checks
    every annotation and image; when they are missing, they are read from the json's
    "categories" alone, in the order detectron2's ``load_coco_json`` gives them.
    """
    if not cfg.DATASETS.TEST:
        return Metadata()
    register_datasets_from_config(cfg)
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
    json_file = metadata.get("json_file", None)
    if metadata.get("thing_dataset_id_to_contiguous_id", None) is not None or not json_file:
        return metadata
    try:
        with open(json_file, encoding="utf-8") as f:
            categories = {c["id"]: c["name"] for c in json.load(f)["categories"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        logger.warning(f"no class names for {metadata.name}: cannot read {json_file} ({e})")
        return metadata
    ids = sorted(categories)
    names = [categories[i] for i in ids]
    if metadata.get("thing_classes", names) != names:
        logger.warning(f"{json_file}: categories differ from the thing_classes of {metadata.name}")
        return metadata
    return Metadata(
        **{
            **metadata.as_dict(),
            "thing_classes": names,
            "thing_dataset_id_to_contiguous_id": {
                dataset_id: i for i, dataset_id in enumerate(ids)
            },
        }
    )
