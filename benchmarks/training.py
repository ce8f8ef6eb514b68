"""The benchmarks' one training driver: a benchmark model's config on a synthetic data set, and its
training with the project's trainer (``retinamask_d2.engine.Trainer``), which every benchmark
that trains goes through, so that their step times and APs are those of the same loop."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from statistics import median

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng

from benchmarks.synthetic_configs import SharedSpec, build_benchmark_model, set_keys, synthetic_cfg
from retinamask_d2.data.coco_json import register_coco_json
from retinamask_d2.data.user_datasets import setup_datasets
from retinamask_d2.engine import Trainer

ACCURACY_DATA = "retinamask_benchmark"  # the accuracy benchmark's data: <name>_train, _val


class BenchmarkTrainer(Trainer):
    """The project's trainer, building the benchmark's models (detectron2's RetinaNet with GN
    heads included: ``build_benchmark_model``)."""

    @classmethod
    def build_model(cls, cfg: CfgNode) -> torch.nn.Module:
        return build_benchmark_model(cfg)


def register(data_dir: Path, prefix: str) -> tuple[str, str]:
    """Register the train and val splits in ``data_dir`` as ``<prefix>_train`` and ``_val``."""
    names = (f"{prefix}_train", f"{prefix}_val")
    for name, split in zip(names, ("train", "val")):
        if name not in DatasetCatalog:
            register_coco_json(name, str(data_dir / f"{split}.json"), str(data_dir / split))
    return names


def benchmark_cfg(
    model: str,
    spec: SharedSpec,
    data_dir: Path,
    prefix: str,
    output_dir: Path,
    device: str = "cpu",
    keys: dict | None = None,
) -> CfgNode:
    """The config of ``model`` (``synthetic_configs.MODELS``, then ``keys`` changed) training on
    ``data_dir``'s train split, registered under ``prefix``. No test set: each benchmark
    evaluates the trained model itself."""
    train_name, _ = register(data_dir, prefix)
    num_classes = len(json.loads((data_dir / "train.json").read_text())["categories"])
    cfg = synthetic_cfg(model, spec, num_classes, str(output_dir), device)
    set_keys(cfg, keys or {})
    cfg.DATASETS.TRAIN = (train_name,)
    cfg.DATASETS.TEST = ()
    return cfg


def accuracy_model(
    model: str,
    data_dir: Path,
    output_dir: Path,
    device: str = "cpu",
    weights: str = "",
    opts: Sequence[str] = (),
) -> tuple[torch.nn.Module, CfgNode]:
    """The accuracy benchmark's ``model`` (config changed by ``opts``, KEY VALUE ...) on its data
    in ``data_dir`` (written by ``benchmarks.accuracy.compare_models``), with seeded random
    weights or the checkpoint ``weights`` where its names and shapes fit (a trained model
    computes more RoIs than a random one); the model and its config."""
    if not (data_dir / "train.json").is_file():
        raise FileNotFoundError(
            f"{data_dir}/train.json: run python -m benchmarks.accuracy.compare_models once (it "
            "writes the data) or pass --data-dir"
        )
    cfg = benchmark_cfg(model, SharedSpec(), data_dir, ACCURACY_DATA, output_dir, device)
    cfg.merge_from_list(list(opts))
    setup_datasets(cfg)
    torch.manual_seed(0)
    built = build_benchmark_model(cfg)
    if weights:
        DetectionCheckpointer(built).load(weights)
    return built, cfg


def build_trainer(cfg: CfgNode, hooks: Sequence[HookBase] = ()) -> BenchmarkTrainer:
    """The trainer of ``cfg`` from the seed ``cfg.SEED`` (the same initial weights and batches in
    every run), ``hooks`` appended after the trainer's own."""
    setup_datasets(cfg)
    seed_all_rng(cfg.SEED)
    trainer = BenchmarkTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.register_hooks(list(hooks))
    return trainer


def train(cfg: CfgNode) -> tuple[torch.nn.Module, dict]:
    """Train ``cfg``'s model; the model and :func:`summary` with the training's wall time."""
    trainer = build_trainer(cfg)
    start = time.perf_counter()
    trainer.train()
    return trainer.model, {**summary(trainer), "train_wall_s": time.perf_counter() - start}


def summary(trainer: BenchmarkTrainer) -> dict:
    """What a finished training measured: the median (and fastest) step, the median data time,
    and the final loss (median of the last tenth of the steps)."""
    storage = trainer.storage
    step_s = [v for v, _ in storage.history("time").values()]
    losses = [v for v, _ in storage.history("total_loss").values()]
    return {
        "train_s_per_iter": median(step_s),
        "train_s_per_iter_min": min(step_s),
        "train_steps_timed": len(step_s),
        "data_s_per_iter": median(v for v, _ in storage.history("data_time").values()),
        "final_total_loss": median(losses[-max(1, len(losses) // 10) :]),
    }
