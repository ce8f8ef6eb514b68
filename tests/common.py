"""Helpers shared by the tests: a tiny RetinaMask config and model that run in seconds on a CPU,
a training batch, and the repository's scripts imported as modules."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances

from retinamask_d2 import add_retinamask_config

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS_DIR = REPO_ROOT / "configs"
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


def training_batch() -> list[dict]:
    """Two 96x128 noise images with two GT instances each (boxes, classes 0 and 2, masks)."""
    g = torch.Generator().manual_seed(0)
    batch = []
    for _ in range(2):
        instances = Instances((96, 128))
        instances.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0], [40, 30, 120, 90]]))
        instances.gt_classes = torch.tensor([0, 2])
        masks = torch.zeros(2, 96, 128, dtype=torch.bool)
        masks[0, 15:45, 12:58] = True
        masks[1, 32:88, 45:115] = True
        instances.gt_masks = BitMasks(masks)
        image = torch.randint(0, 256, (3, 96, 128), generator=g).float()
        batch.append({"image": image, "instances": instances})
    return batch


DEMO_PATH = Path(__file__).resolve().parents[1] / "demo" / "demo.py"


def load_script(path: Path, name: str):
    """A script of this repository (demo/, scripts/) imported as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


demo = load_script(DEMO_PATH, "retinamask_demo")


def model_args(model_dir: Path) -> list[str]:
    return ["--config-file", str(model_dir / "config.yaml"), "--confidence-threshold", "0"]


def weights_args(model_dir: Path) -> list[str]:
    return ["--opts", "MODEL.WEIGHTS", str(model_dir / "model_final.pth")]


def noise_image(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def config_leaf_keys(node, prefix: str = "") -> set[str]:
    """The dotted names of every value below a config node (``prefix`` before each)."""
    keys = set()
    for name, value in node.items():
        if isinstance(value, dict):
            keys |= config_leaf_keys(value, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys
