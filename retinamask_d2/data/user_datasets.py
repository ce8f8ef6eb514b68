"""Users' COCO-format datasets named in the config, and the config changes their data implies.

``DATASETS.COCO_JSON`` lists ``(name, json_file, image_root)`` triples that are registered (with
the checks of :mod:`retinamask_d2.data.coco_json`) before training or evaluation; the names can
then be used in ``DATASETS.TRAIN`` / ``DATASETS.TEST``.

:func:`setup_datasets` then loads the checked training sets once, early, so a bad json stops the
run before the model is built, and fits the config to the data: RLE masks need
``INPUT.MASK_FORMAT bitmask``, the number of classes comes from the json's categories, and the
class names and category ids are written into the config, so that the trained model carries
them (the predictor, the demo and ``--eval-only`` read them from its config.yaml).
"""

from __future__ import annotations

import logging

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog

from .classes import set_model_classes
from .coco_json import MAX_IMAGES_LISTED, CocoJsonError, is_checked_coco_json, register_coco_json
from .image_io import SizeLimits

logger = logging.getLogger(__name__)


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
    here), masks are required when ``MODEL.MASK_ON``, RLE masks switch ``INPUT.MASK_FORMAT``
    to bitmask, and the number of classes, the class names and the category ids are set from
    the categories of the first one. Other datasets are left to detectron2.
    """
    register_datasets_from_config(cfg)
    if not training:
        return
    checked = [n for n in cfg.DATASETS.TRAIN if is_checked_coco_json(n)]
    limits = SizeLimits.from_config(cfg, training=True)
    for name in checked:
        # runs the checks; cached for the data loader
        check_image_sizes(DatasetCatalog.get(name), limits, name)
        meta = MetadataCatalog.get(name)
        if meta.no_training_annotations:
            raise CocoJsonError(meta.no_training_annotations)
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
        _set_classes(cfg, checked[0])


def check_test_datasets(cfg: CfgNode) -> None:
    """Load and check the checked datasets of ``DATASETS.TEST`` now, not after training: a bad
    json, an empty one, or an image outside the size limits stops the run before it starts."""
    limits = SizeLimits.from_config(cfg, training=False)
    for name in cfg.DATASETS.TEST:
        if not is_checked_coco_json(name):
            continue
        dicts = DatasetCatalog.get(name)
        if not dicts:
            raise CocoJsonError(
                f"{MetadataCatalog.get(name).json_file}: 'images' is empty; dataset {name!r} in "
                "DATASETS.TEST has nothing to evaluate"
            )
        check_image_sizes(dicts, limits, name)


def check_image_sizes(dicts: list[dict], limits: SizeLimits, dataset: str) -> None:
    """Refuse a dataset with images outside ``limits`` (sizes as the checked json gives them,
    which match the files' headers), listing them all, before any image is decoded."""
    bad = []
    for record in dicts:
        problem = limits.problem(record["width"], record["height"])
        if problem:
            bad.append(f"image id {record['image_id']}: {record['file_name']}: {problem}")
    if not bad:
        return
    json_file = MetadataCatalog.get(dataset).json_file
    if len(bad) == 1:
        raise CocoJsonError(f"{json_file}: {bad[0]}")
    shown = "\n  ".join(bad[:MAX_IMAGES_LISTED])
    more = len(bad) - MAX_IMAGES_LISTED
    raise CocoJsonError(
        f"{json_file}: {len(bad)} of {len(dicts)} image(s) are "
        f"outside this config's size limits:\n  {shown}"
        + (f"\n  and {more} more" if more > 0 else "")
    )


def _set_classes(cfg: CfgNode, dataset: str) -> None:
    meta = MetadataCatalog.get(dataset)
    id_map = meta.thing_dataset_id_to_contiguous_id
    set_model_classes(
        cfg, list(meta.thing_classes), sorted(id_map, key=id_map.get), f"dataset {dataset!r}"
    )
