"""Configs of the three models for the accuracy benchmarks on synthetic data.

Each model starts from its own base config: RetinaMask from the project's small synthetic setting
(``configs/quickstart/Base-RetinaMask-R18-synthetic.yaml``, itself on ``Base-RetinaMask.yaml``;
the schedule is set here), detectron2's RetinaNet and Mask R-CNN from ``Base-RetinaNet.yaml`` and
``Base-RCNN-FPN.yaml`` with masks, so each keeps what makes it that model (detectron2's RetinaNet
keeps its P6-from-res5, box coder and NMS 0.5; Mask R-CNN its RPN, 512 sampled RoIs per image and
box head). The detectron2 models get the recipe's from-scratch keys (``FROM_SCRATCH_KEYS``, read
from that file), and :func:`apply_shared` then sets everything that must be the same for a fair
comparison, in one place: backbone depth, FPN width, head depths and widths, anchors, input size,
schedule and seed. Nothing here is pretrained.
"""

from dataclasses import asdict, dataclass

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import RetinaNet, build_model

import retinamask_d2
from retinamask_d2.model_zoo import get_config_file
from retinamask_d2.modeling.retinanet_head import retinanet_arguments

BASE_CONFIGS = {
    "retinanet": "Base-RetinaNet.yaml",
    "mask_rcnn": "Base-RCNN-FPN.yaml",
}
RECIPE = "quickstart/Base-RetinaMask-R18-synthetic.yaml"
# The quickstart fine-tuned from ImageNet MobileNetV2; PRETRAINED_KEYS are what makes a model
# start from that backbone (read from this file, set on every model of a pretrained benchmark).
PRETRAINED = "quickstart/retinamask_MNV2_synthetic.yaml"
PRETRAINED_KEYS = (
    "MODEL.WEIGHTS",
    "MODEL.BACKBONE.NAME",
    "MODEL.BACKBONE.FREEZE_AT",
    "MODEL.MOBILENETV2.NORM",
    "MODEL.FPN.IN_FEATURES",
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
    "INPUT.FORMAT",
)
# What training from scratch needs, taken from RECIPE for every model (RetinaMask has it already).
FROM_SCRATCH_KEYS = (
    "MODEL.WEIGHTS",
    "MODEL.PIXEL_STD",
    "MODEL.BACKBONE.FREEZE_AT",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "MODEL.RESNETS.NORM",
    "MODEL.FPN.NORM",
    "MODEL.RETINANET.NORM",
    "INPUT.MASK_FORMAT",
)
# P2-P5 mask pooling, the default of configs/Base-RetinaMask.yaml.
P2_KEYS = {
    "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.FPN.IN_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.RETINAMASK.MASK_IN_FEATURES": ["p2", "p3", "p4", "p5"],
}
# The paper's mask branch (P3-P5, cross-entropy only), set on every RetinaMask model before its
# own change: a row keeps measuring the same model when the project's defaults change.
PAPER_MASK_KEYS = {
    "MODEL.RESNETS.OUT_FEATURES": ["res3", "res4", "res5"],
    "MODEL.FPN.IN_FEATURES": ["res3", "res4", "res5"],
    "MODEL.RETINAMASK.MASK_IN_FEATURES": ["p3", "p4", "p5"],
    "MODEL.RETINAMASK.MASK_DICE_WEIGHT": 0.0,
}
MODELS = ("retinamask", "retinanet", "mask_rcnn", "retinamask_no_mask_loss", "retinamask_p2")
# RetinaNet's octave scales 2^0, 2^(1/3), 2^(2/3) of each level's anchor size.
OCTAVE_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))


@dataclass(frozen=True)
class SharedSpec:
    """What the three models share. The defaults fit the 2-core CPU budget of ~30 minutes."""

    depth: int = 18  # ResNet depth (18 or 34: basic blocks)
    fpn_channels: int = 64
    head_convs: int = 2  # RetinaNet towers (box and class), for RetinaNet and RetinaMask
    mask_convs: int = 2  # mask head convs, for RetinaMask and Mask R-CNN
    mask_dim: int = 64  # mask head channels
    box_fc_dim: int = 256  # Mask R-CNN's box head (detectron2 default 1024 for 256-ch FPN)
    image_size: int = 128  # train and test short and long side (the synthetic images' size)
    anchor_size: int = 16  # anchor size on the finest detection level; doubles per level
    ims_per_batch: int = 4
    base_lr: float = 0.01
    max_iter: int = 500
    warmup_iters: int = 50
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def synthetic_cfg(
    model: str, spec: SharedSpec, num_classes: int, output_dir: str, device: str = "cpu"
) -> CfgNode:
    """The config of ``model`` for ``spec``: one of ``MODELS``.

    "retinamask_no_mask_loss" is the ablation of the paper's claim: RetinaMask with
    ``MASK_LOSS_WEIGHT`` 0, so that the mask branch runs but teaches the backbone nothing; its
    box AP against RetinaMask's is what the mask loss adds, everything else being equal.
    "retinamask_p2": masks pooled from P2-P5, as Mask R-CNN pools them, instead of the paper's
    P3-P5. Every RetinaMask model starts from the paper's mask branch (``PAPER_MASK_KEYS``).
    """
    cfg = get_cfg()
    retinamask_d2.add_retinamask_config(cfg)  # unused keys for the other models
    if model.startswith("retinamask"):
        cfg.merge_from_file(get_config_file(RECIPE))
        set_keys(cfg, PAPER_MASK_KEYS)
        if model == "retinamask_no_mask_loss":
            cfg.MODEL.RETINAMASK.MASK_LOSS_WEIGHT = 0.0
        elif model == "retinamask_p2":
            set_keys(cfg, P2_KEYS)
        elif model != "retinamask":
            raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    elif model in BASE_CONFIGS:
        cfg.merge_from_file(model_zoo.get_config_file(BASE_CONFIGS[model]))
        cfg.MODEL.MASK_ON = model == "mask_rcnn"
        set_keys(cfg, recipe_values(FROM_SCRATCH_KEYS))
    else:
        raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODELS)}")
    apply_shared(cfg, spec, num_classes)
    cfg.MODEL.DEVICE = device
    cfg.OUTPUT_DIR = output_dir
    return cfg


def recipe_values(keys: tuple[str, ...], config: str = RECIPE) -> dict[str, object]:
    """The values of ``keys`` (dotted names) in ``config`` (a project config path)."""
    recipe = get_cfg()
    retinamask_d2.add_retinamask_config(recipe)
    recipe.merge_from_file(get_config_file(config))
    values = {}
    for key in keys:
        node = recipe
        for part in key.split("."):
            node = node[part]
        values[key] = node
    return values


def set_keys(cfg: CfgNode, values: dict[str, object]) -> None:
    """Set dotted ``values`` in ``cfg`` (in place)."""
    for key, value in values.items():
        *parents, last = key.split(".")
        node = cfg
        for part in parents:
            node = node[part]
        node[last] = value


def apply_shared(cfg: CfgNode, spec: SharedSpec, num_classes: int) -> None:
    """Set the values every model shares (in place)."""
    cfg.MODEL.RESNETS.DEPTH = spec.depth
    cfg.MODEL.FPN.OUT_CHANNELS = spec.fpn_channels

    # Anchors: one size per level (Mask R-CNN, P2-P6) or three octave scales per level
    # (RetinaNet and RetinaMask, P3-P7), starting at spec.anchor_size and doubling.
    sizes = [spec.anchor_size * 2**level for level in range(5)]
    if cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN":
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[s] for s in sizes]
    else:
        cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[s * k for k in OCTAVE_SCALES] for s in sizes]

    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.MODEL.RETINANET.NUM_CONVS = spec.head_convs
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes  # Mask R-CNN's; RetinaMask ignores it
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = spec.box_fc_dim
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = spec.mask_convs
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = spec.mask_dim

    cfg.INPUT.MIN_SIZE_TRAIN = (spec.image_size,)
    cfg.INPUT.MAX_SIZE_TRAIN = spec.image_size
    cfg.INPUT.MIN_SIZE_TEST = spec.image_size
    cfg.INPUT.MAX_SIZE_TEST = spec.image_size
    cfg.INPUT.RANDOM_FLIP = "horizontal"

    cfg.SOLVER.IMS_PER_BATCH = spec.ims_per_batch
    cfg.SOLVER.BASE_LR = spec.base_lr
    cfg.SOLVER.MAX_ITER = spec.max_iter
    # Learning rate x0.1 at 75% and 90% of the schedule, as detectron2's 1x is at 2/3 and 8/9.
    steps = {int(spec.max_iter * f) for f in (0.75, 0.9)}
    cfg.SOLVER.STEPS = tuple(sorted(s for s in steps if 0 < s < spec.max_iter))
    cfg.SOLVER.WARMUP_ITERS = min(spec.warmup_iters, spec.max_iter)
    cfg.SOLVER.CHECKPOINT_PERIOD = 10**9  # only model_final
    cfg.TEST.EVAL_PERIOD = 0
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    cfg.DATALOADER.NUM_WORKERS = 0  # the 2 cores are for the models
    cfg.SEED = spec.seed


def build_benchmark_model(cfg: CfgNode) -> torch.nn.Module:
    """detectron2's ``build_model``, except that detectron2's RetinaNet with
    ``MODEL.RETINANET.NORM: "GN"`` gets its head from the project's GN-head helper (detectron2
    v0.6 cannot build one; without GN its towers would not train from scratch like RetinaMask's).
    """
    if cfg.MODEL.META_ARCHITECTURE != "RetinaNet" or cfg.MODEL.RETINANET.NORM != "GN":
        return build_model(cfg)
    return RetinaNet(**retinanet_arguments(cfg)).to(torch.device(cfg.MODEL.DEVICE))
