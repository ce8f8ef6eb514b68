"""The model, an embedder and a crop mode together: from image files to stored, searchable
objects."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np
from detectron2.structures import Instances

from retinamask_d2.data.image_io import read_image
from retinamask_d2.predictor import RetinaMaskPredictor

from .crops import instance_crops
from .embedders import build_embedder
from .index import Hit, IndexReport, ObjectIndex


class ObjectFinder:
    """Finds the objects of images with ``predictor`` and embeds each one's ``crop_mode`` crop
    with the embedder called ``embedder`` (see :mod:`.embedders`)."""

    def __init__(self, predictor: RetinaMaskPredictor, embedder: str, crop_mode: str):
        if embedder == "maskpool" and not predictor.cfg.MODEL.RETINAMASK.TEST_EMBEDDINGS:
            raise ValueError(
                "the maskpool embedder needs a model built with "
                "MODEL.RETINAMASK.TEST_EMBEDDINGS True"
            )
        self.predictor = predictor
        self.embedder = build_embedder(embedder, device=str(predictor.cfg.MODEL.DEVICE))
        self.crop_mode = crop_mode

    def settings(self) -> dict:
        """What an index made by this finder records, and must match to be added to."""
        return {"embedder": self.embedder.name, "crop_mode": self.crop_mode}

    def index(
        self, folder: str | os.PathLike, paths: Iterable[str | os.PathLike], **recorded
    ) -> tuple[ObjectIndex, IndexReport]:
        """Add the objects of ``paths`` to the index in ``folder`` (created if needed, with
        ``recorded`` such as the model's config and weights written into it)."""
        index = ObjectIndex.create(folder, **self.settings(), **recorded)
        report = index.add_images(
            paths,
            predict=self._predict,
            read_rgb=self._read_rgb,
            embed=self.embedder.embed,
            metadata=self.predictor.metadata,
        )
        return index, report

    def _predict(self, rgb: np.ndarray) -> Instances:
        return self.predictor.predict(rgb, format="RGB")

    def _read_rgb(self, path: str) -> np.ndarray:
        return read_image(path, "RGB", self.predictor.size_limits.max_megapixels)

    def embed_image(self, path: str | os.PathLike) -> tuple[Instances, np.ndarray, list[int]]:
        """The instances of one image, the embeddings of those with an object to crop, and
        their positions among the instances."""
        rgb = self._read_rgb(str(path))
        instances = self._predict(rgb)
        crops, kept = instance_crops(rgb, instances, self.crop_mode)
        upright = self.crop_mode == "upright"
        vectors = self.embedder.embed(crops, upright, instances, kept) if crops else None
        return instances, vectors, kept

    def search_image(
        self, index: ObjectIndex, path: str | os.PathLike, k: int = 10, **filters
    ) -> list[tuple[int, list[Hit]]]:
        """For each object found in the image at ``path``: its position among the image's
        instances and its ``k`` nearest stored objects."""
        if (
            index.meta["embedder"] != self.embedder.name
            or index.meta["crop_mode"] != self.crop_mode
        ):
            raise ValueError(
                f"{index.folder} holds {index.meta['embedder']} embeddings of "
                f"{index.meta['crop_mode']} crops; search it with the same embedder and crop mode"
            )
        _, vectors, kept = self.embed_image(path)
        if vectors is None:
            return []
        return [(i, index.search(v, k, **filters)) for i, v in zip(kept, vectors)]
