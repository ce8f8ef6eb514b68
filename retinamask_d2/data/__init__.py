"""Datasets for RetinaMask: users' COCO-format jsons (checked, registered from the config or the
command line), the synthetic shapes dataset and a resumable, deterministic training loader.

Importing this package registers the synthetic splits under their fixed names."""

from .builtin import SYNTHETIC_DATASETS, datasets_root, register_synthetic
from .coco_json import CocoJsonError, load_checked_coco_json, register_coco_json

register_synthetic()

__all__ = [
    "SYNTHETIC_DATASETS",
    "CocoJsonError",
    "datasets_root",
    "load_checked_coco_json",
    "register_coco_json",
    "register_synthetic",
]
