"""Helpers shared by the tests: a tiny RetinaMask config and model that run in seconds on a CPU."""

from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model

from retinamask_d2 import add_retinamask_config

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
BASE_CONFIG = CONFIGS_DIR / "Base-RetinaMask.yaml"
INSTANT_CONFIG = CONFIGS_DIR / "quick_schedules" / "retinamask_R18_GN_scratch_instant_test.yaml"


def get_tiny_cfg(num_classes: int = 3) -> CfgNode:
    """The project's tiny from-scratch recipe (``INSTANT_CONFIG``), shrunk further so that a
    test step takes a fraction of a second: 1 conv per tower, a 32-channel 1-conv mask head,
    images of at most 128 px, 2 images per batch, the paper's mask levels. Everything else (the
    paper's recipe, the mask branch's logic) is the real configuration."""
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(INSTANT_CONFIG))
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    # The paper's mask branch (P3-P5, BCE only), which the hand-made feature maps and losses of
    # the unit tests are written for; the default P2-P5 + Dice is tested through the shipped
    # configs (tests/test_configs.py) and each switch's own test.
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.RETINAMASK.MASK_IN_FEATURES = ["p3", "p4", "p5"]
    cfg.MODEL.RETINAMASK.MASK_DICE_WEIGHT = 0.0
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.SOLVER.IMS_PER_BATCH = 2
    return cfg


def set_retinamask_keys(cfg: CfgNode, options: dict) -> None:
    """Set ``MODEL.RETINAMASK`` keys named by dotted paths below it (``"MASK_NMS.THRESH"``)."""
    for key, value in options.items():
        node = cfg.MODEL.RETINAMASK
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value


def build_tiny_model(cfg: CfgNode | None = None) -> torch.nn.Module:
    """Build the model of ``cfg`` (default: :func:`get_tiny_cfg`) on the CPU, in training mode."""
    return build_model(cfg if cfg is not None else get_tiny_cfg())


def launch_retrying_exit_aborts(main_func, num_processes: int, attempts: int = 3, **kwargs):
    """detectron2's ``launch``, started again when a process died by SIGABRT.

    torch 2.14's Gloo sometimes aborts a process as it exits, after all its work is done
    ("terminate called without an active exception"): measured here in about 1 of 20
    two-process CPU launches; a barrier or destroying the process group first made it more
    frequent. Any other failure, or an abort in every attempt, fails the test.
    """
    from detectron2.engine import launch
    from torch.multiprocessing import ProcessExitedException

    for attempt in range(attempts):
        try:
            return launch(main_func, num_processes, **kwargs)
        except ProcessExitedException as e:
            if e.signal_name != "SIGABRT" or attempt == attempts - 1:
                raise
