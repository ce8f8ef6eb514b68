"""Users' COCO-format datasets from the config or the command line, and the config fixes they need.

``DATASETS.COCO_JSON`` lists ``(name, json_file, image_root)`` triples that are registered (with
the checks of :mod:`retinamask_d2.data.coco_json`) before training or evaluation; the names can
then be used in ``DATASETS.TRAIN`` / ``DATASETS.TEST``. ``train_net.py`` also takes
``--train-json/--train-images`` and ``--test-json/--test-images``, which write those keys.

:func:`setup_datasets` then loads the checked training sets once, early, so a bad json stops the
run before the model is built, and fits the config to the data: RLE masks need
``INPUT.MASK_FORMAT bitmask``, and the number of classes comes from the json's categories.
"""

from __future__ import annotations

import argparse
import logging
import os

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from .coco_json import CocoJsonError, is_checked_coco_json, register_coco_json

logger = logging.getLogger(__name__)

# Config keys that hold the number of classes: the box head's and the mask head's.
NUM_CLASSES_KEYS = ("MODEL.RETINANET.NUM_CLASSES", "MODEL.ROI_HEADS.NUM_CLASSES")
# Names under which --train-json / --test-json register their datasets.
CLI_TRAIN_NAME, CLI_TEST_NAME = "coco_json_train", "coco_json_test"


def add_dataset_config(cfg: CfgNode) -> None:
    """Add ``DATASETS.COCO_JSON`` (empty by default) to ``cfg`` in place, once."""
    if "COCO_JSON" not in cfg.DATASETS:
        cfg.DATASETS.COCO_JSON = ()


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line flags for a user's COCO-format train and test sets."""
    group = parser.add_argument_group("a COCO-format dataset (json + image folder)")
    group.add_argument("--train-json", metavar="FILE", help="training annotations (COCO json)")
    group.add_argument("--train-images", metavar="DIR", help="folder of the training images")
    group.add_argument("--test-json", metavar="FILE", help="evaluation annotations (COCO json)")
    group.add_argument("--test-images", metavar="DIR", help="folder of the evaluation images")


def dataset_options(args: argparse.Namespace) -> list[str]:
    """Config overrides (``KEY VALUE`` list) that the dataset flags of ``args`` stand for.

    They come before the command line's own overrides, which therefore win.
    """
    triples, opts = [], []
    for split, name, key in (("train", CLI_TRAIN_NAME, "TRAIN"), ("test", CLI_TEST_NAME, "TEST")):
        json_file, image_root = getattr(args, f"{split}_json"), getattr(args, f"{split}_images")
        if (json_file is None) != (image_root is None):
            raise CocoJsonError(f"--{split}-json and --{split}-images must be given together")
        if json_file is not None:
            triples.append((name, os.path.abspath(json_file), os.path.abspath(image_root)))
            opts += [f"DATASETS.{key}", repr((name,))]
    return ["DATASETS.COCO_JSON", repr(tuple(triples)), *opts] if triples else []


def register_datasets_from_config(cfg: CfgNode) -> None:
    """Register every ``(name, json_file, image_root)`` of ``cfg.DATASETS.COCO_JSON``."""
    for entry in cfg.DATASETS.get("COCO_JSON", ()):
        if not (len(entry) == 3 and all(isinstance(x, str) for x in entry)):
            raise CocoJsonError(
                "DATASETS.COCO_JSON: each entry must be (name, json_file, image_root), "
                f"got {entry!r}"
            )
        register_coco_json(*entry)


def setup_datasets(cfg: CfgNode, training: bool = True) -> None:
    """Register the config's COCO jsons and fit ``cfg`` (unfrozen, changed in place) to them.

    With ``training``, the checked datasets of ``DATASETS.TRAIN`` are loaded now (a bad one stops
    here), masks are required when ``MODEL.MASK_ON``, and RLE masks switch ``INPUT.MASK_FORMAT``
    to bitmask. The number of classes is set from the categories of the checked training sets
    (of the test sets when not ``training``); other datasets are left to detectron2.
    """
    register_datasets_from_config(cfg)
    names = cfg.DATASETS.TRAIN if training else cfg.DATASETS.TEST
    checked = [n for n in names if is_checked_coco_json(n)]
    for name in checked:
        DatasetCatalog.get(name)  # runs the checks; cached for the data loader
        meta = MetadataCatalog.get(name)
        if not training:
            continue
        if cfg.MODEL.MASK_ON and not meta.has_masks:
            raise CocoJsonError(
                f"{meta.json_file}: no annotation has a 'segmentation', but MODEL.MASK_ON is True "
                f"and dataset {name!r} is in DATASETS.TRAIN; give masks, or train boxes only "
                "with MODEL.MASK_ON False"
            )
        if cfg.MODEL.MASK_ON and meta.has_rle_masks and cfg.INPUT.MASK_FORMAT == "polygon":
            logger.info(f"{meta.json_file} has RLE masks: setting INPUT.MASK_FORMAT to bitmask")
            cfg.INPUT.MASK_FORMAT = "bitmask"
    if checked:
        _set_num_classes(cfg, len(MetadataCatalog.get(checked[0]).thing_classes), checked[0])


def _set_num_classes(cfg: CfgNode, num_classes: int, dataset: str) -> None:
    for key in NUM_CLASSES_KEYS:
        node_name, leaf = key.rsplit(".", 1)
        node = cfg
        for part in node_name.split("."):
            node = node[part]
        if node[leaf] != num_classes:
            logger.warning(
                f"setting {key} from {node[leaf]} to {num_classes}, the number of categories "
                f"of dataset {dataset!r}"
            )
            node[leaf] = num_classes
