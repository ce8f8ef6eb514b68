"""Several CPU processes (GLOO) with detectron2's ``launch``: the ranks keep identical weights, and
2 processes train exactly what 1 process with the same total batch trains."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, get_cfg
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from retinamask_d2.data.synthetic import generate
from retinamask_d2.data.user_datasets import setup_datasets
from retinamask_d2.engine import Trainer
from tests.common import launch_retrying_exit_aborts


@META_ARCH_REGISTRY.register()
class PerImageLossToy(nn.Module):
    """A one-conv 'segmenter' whose loss is the mean of per-image losses.

    Real detectors normalise their losses by the foreground count of the batch on each process
    (RetinaNet's ``loss_normalizer``), so averaging gradients over processes is not exactly the
    1-process gradient; with a per-image mean it is, and the test can ask for equality.
    """

    def __init__(self, cfg: CfgNode):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3, padding=1)
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1), False)

    def forward(self, batched_inputs: list[dict]) -> dict:
        losses = []
        for x in batched_inputs:
            image = (x["image"].float() - self.pixel_mean) / 60.0
            target = x["instances"].gt_masks.tensor.any(0).float()
            logits = self.conv(image[None])[0, 0]
            losses.append(F.binary_cross_entropy_with_logits(logits, target))
        return {"loss_toy": torch.stack(losses).mean()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp_data")
    generate(root, {"train": 12}, image_size=64, seed=1)
    return root


def _cfg(data: Path, output: Path, meta_arch_cfg: CfgNode | None = None) -> CfgNode:
    cfg = meta_arch_cfg if meta_arch_cfg is not None else get_cfg()
    cfg.DATASETS.COCO_JSON = (("ddp_train", str(data / "train.json"), str(data / "train")),)
    cfg.DATASETS.TRAIN = ("ddp_train",)
    cfg.DATASETS.TEST = ()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.MASK_ON = True
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)  # flips stay on: their seeds follow the sample, not the rank
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.BASE_LR = 0.05
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.CHECKPOINT_PERIOD = 10_000
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SEED = 5
    cfg.OUTPUT_DIR = str(output)
    return cfg


def _train_and_save(cfg: CfgNode, out_dir: str) -> None:
    """What train_net.py's main does, then every rank saves its weights (1 thread per process:
    2 processes share 2 cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_and_save_one_thread(cfg, out_dir)
    finally:
        torch.set_num_threads(threads)  # the 1-process run is this (pytest's) process


def _train_and_save_one_thread(cfg: CfgNode, out_dir: str) -> None:
    cfg = cfg.clone()
    setup_datasets(cfg)
    cfg.freeze()
    seed_all_rng(cfg.SEED + comm.get_rank())  # as default_setup does
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    model = trainer.model
    assert isinstance(model, DistributedDataParallel) == (comm.get_world_size() > 1)
    if isinstance(model, DistributedDataParallel):
        model = model.module
    name = f"rank{comm.get_rank()}_of_{comm.get_world_size()}.pth"
    torch.save(model.state_dict(), Path(out_dir) / name)


def _launch(cfg: CfgNode, out_dir: Path, processes: int) -> None:
    launch_retrying_exit_aborts(
        _train_and_save, processes, dist_url="auto", args=(cfg, str(out_dir))
    )


def test_two_processes_equal_one_process_with_the_same_total_batch(data, tmp_path):
    cfg = _cfg(data, tmp_path / "out")
    cfg.MODEL.META_ARCHITECTURE = "PerImageLossToy"
    cfg.SOLVER.MAX_ITER = 6
    _launch(cfg, tmp_path, 2)
    _launch(cfg, tmp_path, 1)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}_of_2.pth") for r in (0, 1))
    single = torch.load(tmp_path / "rank0_of_1.pth")
    seed_all_rng(cfg.SEED)
    initial = PerImageLossToy(cfg).state_dict()
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], value, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(single["conv.weight"], initial["conv.weight"], atol=1e-3)


def test_retinamask_ranks_keep_identical_weights(data, tmp_path):
    from tests.common import get_tiny_cfg

    cfg = _cfg(data, tmp_path / "out", get_tiny_cfg(num_classes=4))
    cfg.SOLVER.MAX_ITER = 2
    _launch(cfg, tmp_path, 2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}_of_2.pth") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
