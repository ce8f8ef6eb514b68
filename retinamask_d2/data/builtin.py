"""Fixed names for the synthetic dataset, registered at import like detectron2's builtin COCO.

``retinamask_synthetic_train`` and ``retinamask_synthetic_val`` are the splits written by
``python -m retinamask_d2.data.synthetic`` into ``<datasets root>/synthetic``. They are registered
whether or not the files exist yet (loading is lazy), so a config can name them before the data
is made; loading a missing split says how to make it.
"""

from __future__ import annotations

import os
from pathlib import Path

from detectron2.data import MetadataCatalog

from .coco_json import register_coco_json
from .synthetic import CLASSES

SYNTHETIC_DATASETS = {"retinamask_synthetic_train": "train", "retinamask_synthetic_val": "val"}


def datasets_root() -> Path:
    """``$RETINAMASK_DATASETS`` if set, else ``./datasets``: the same rule as detectron2's
    ``$DETECTRON2_DATASETS`` for its builtin datasets (commands run from the checkout's root)."""
    return Path(os.environ.get("RETINAMASK_DATASETS", "datasets")).absolute()


def register_synthetic(root: Path | None = None) -> None:
    """Register the synthetic splits found (or to be made) under ``root/synthetic``."""
    folder = (root if root is not None else datasets_root()) / "synthetic"
    hint = (
        f"; make it with `python -m retinamask_d2.data.synthetic --output {folder}` "
        "or point $RETINAMASK_DATASETS at the folder that holds synthetic/"
    )
    for name, split in SYNTHETIC_DATASETS.items():
        register_coco_json(
            name, str(folder / f"{split}.json"), str(folder / split), hint, read_categories=False
        )
        MetadataCatalog.get(name).set(
            thing_classes=list(CLASSES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(CLASSES))},
        )
