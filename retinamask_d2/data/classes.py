"""The model's classes: which config key counts them, their names, their dataset category ids.

Every other module asks here, so that a class count, a name or a category id is read one way
everywhere (training, evaluation, the predictor, drawings, COCO results, cut-outs).
"""

from __future__ import annotations

import logging

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata

logger = logging.getLogger(__name__)

# Meta-architectures whose class count is MODEL.RETINANET.NUM_CLASSES; others read ROI_HEADS'.
RETINANET_FAMILY = ("RetinaMask", "RetinaNet")


def num_classes_key(cfg: CfgNode) -> str:
    """The one config key that holds the model's number of classes."""
    if cfg.MODEL.META_ARCHITECTURE in RETINANET_FAMILY:
        return "MODEL.RETINANET.NUM_CLASSES"
    return "MODEL.ROI_HEADS.NUM_CLASSES"


def num_classes(cfg: CfgNode) -> int:
    """The model's number of classes, read from :func:`num_classes_key`."""
    node = cfg
    for part in num_classes_key(cfg).split("."):
        node = node[part]
    return int(node)


def set_model_classes(cfg: CfgNode, names: list[str], dataset_ids: list[int], source: str) -> None:
    """Make ``cfg`` (unfrozen) a model of the classes ``names`` whose dataset category ids are
    ``dataset_ids``: the class count, and for RetinaMask the names and ids its config carries."""
    key = num_classes_key(cfg)
    node_name, leaf = key.rsplit(".", 1)
    node = cfg
    for part in node_name.split("."):
        node = node[part]
    if node[leaf] != len(names):
        logger.warning(
            f"setting {key} from {node[leaf]} to {len(names)}, the number of categories of {source}"
        )
        node[leaf] = len(names)
    if "RETINAMASK" in cfg.MODEL:
        cfg.MODEL.RETINAMASK.CLASS_NAMES = list(names)
        cfg.MODEL.RETINAMASK.DATASET_CATEGORY_IDS = list(dataset_ids)


def model_class_names(cfg: CfgNode) -> list[str]:
    """The model's class names as training stored them, [] when it stored none."""
    return list(cfg.MODEL.RETINAMASK.CLASS_NAMES) if "RETINAMASK" in cfg.MODEL else []


def model_metadata(cfg: CfgNode) -> Metadata:
    """The model's class names and the map from dataset category ids to its classes, for
    drawings and COCO results.

    They come from the config the model was trained with (``MODEL.RETINAMASK.CLASS_NAMES`` and
    ``DATASET_CATEGORY_IDS``, written by ``train_net.py``), so no dataset is read. A config
    without them (trained elsewhere) falls back to the metadata already registered for
    ``DATASETS.TEST[0]`` (detectron2's builtin datasets, the synthetic shapes), else to none.
    """
    names = list(cfg.MODEL.RETINAMASK.CLASS_NAMES)
    ids = list(cfg.MODEL.RETINAMASK.DATASET_CATEGORY_IDS)
    if names:
        metadata = Metadata(name="model", thing_classes=names)
        if len(ids) == len(names):
            metadata.thing_dataset_id_to_contiguous_id = {d: i for i, d in enumerate(ids)}
        return metadata
    if cfg.DATASETS.TEST and cfg.DATASETS.TEST[0] in MetadataCatalog.list():
        return MetadataCatalog.get(cfg.DATASETS.TEST[0])
    logger.warning("no MODEL.RETINAMASK.CLASS_NAMES in the config: classes are shown as numbers")
    return Metadata()


def class_name(metadata: Metadata, class_id: int) -> str:
    """The class's name from ``thing_classes``, or ``class<id>`` when the metadata has none."""
    names = metadata.get("thing_classes", None)
    if names is not None and 0 <= class_id < len(names):
        return str(names[class_id])
    return f"class{class_id}"


def contiguous_to_dataset_id(metadata: Metadata) -> dict[int, int] | None:
    """The dataset category id of each contiguous class id, None when the metadata has no map."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id", None)
    return None if mapping is None else {v: k for k, v in mapping.items()}
