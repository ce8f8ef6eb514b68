"""Helpers shared by the tests: a tiny RetinaMask config and model that run in seconds on a CPU."""

from pathlib import Path

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model

from retinamask_d2 import add_retinamask_config

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
BASE_CONFIG = CONFIGS_DIR / "Base-RetinaMask.yaml"


def get_tiny_cfg(num_classes: int = 3) -> CfgNode:
    """Base-RetinaMask scaled down for CPU tests: ResNet-18 with GN (trainable from scratch,
    FREEZE_AT 0), 64-channel FPN and box head (GN needs 2+ channels per group on the 1x1 P7),
    32-channel mask head, 1 conv per tower, images of at most 128 px. Everything else (the
    recipe, the mask branch's logic) is the real configuration."""
    cfg = get_cfg()
    add_retinamask_config(cfg)
    cfg.merge_from_file(str(BASE_CONFIG))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.PIXEL_STD = [57.375, 57.120, 58.395]  # from scratch: normalise to unit scale
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.NORM = "GN"
    cfg.MODEL.FPN.OUT_CHANNELS = 64
    cfg.MODEL.FPN.NORM = "GN"
    cfg.MODEL.RETINANET.NUM_CLASSES = num_classes
    cfg.MODEL.RETINANET.NUM_CONVS = 1
    cfg.MODEL.RETINANET.NORM = "GN"
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.INPUT.MIN_SIZE_TRAIN = (96,)
    cfg.INPUT.MAX_SIZE_TRAIN = 128
    cfg.INPUT.MIN_SIZE_TEST = 96
    cfg.INPUT.MAX_SIZE_TEST = 128
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


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
