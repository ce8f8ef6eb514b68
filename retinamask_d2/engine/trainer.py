"""A DefaultTrainer for any detectron2 meta-architecture that also runs on CPU processes, evaluates
with COCOEvaluator and resumes exactly.

What it changes in detectron2's ``DefaultTrainer``, and why:

* ``__init__`` wraps the model for several processes with ``device_ids=None`` when the model is
  on the CPU: ``create_ddp_model`` always passes ``device_ids=[local_rank]``, which
  ``DistributedDataParallel`` rejects for a CPU module, so ``--num-gpus N`` without a GPU (N GLOO
  processes) could not train. The rest of ``__init__`` does what detectron2's does.
* ``build_train_loader`` returns a :class:`~retinamask_d2.data.train_loader.ResumableTrainLoader`
  (batches and augmentations a function of seed and iteration) and ``build_hooks`` adds
  :class:`~retinamask_d2.engine.hooks.ReproducibleSteps`; with them a run killed and resumed ends
  with the weights of an uninterrupted run. Other ``DATALOADER.SAMPLER_TRAIN`` values fall back to
  detectron2's loader (resuming then continues, but not bit for bit).
* ``SOLVER.AMP.ENABLED`` also trains on the CPU (bf16 autocast, see
  :class:`~retinamask_d2.engine.amp.CPUAutocastTrainer`); on a GPU it is detectron2's AMPTrainer.
* ``state_dict`` also saves the optimizer, which detectron2 v0.6 leaves out of checkpoints
  (later versions save it the same way, under ``"_trainer"``).
* ``build_evaluator`` is COCOEvaluator (boxes, and masks with ``MODEL.MASK_ON`` unless
  ``MODEL.RETINAMASK.TEST_TOPK_MASKS`` is 0, i.e. box-only inference) in its pure-Python mode,
  which needs no ``detectron2._C``.
* images are read by the project's reader in training and evaluation alike
  (:class:`~retinamask_d2.data.mapper.ImageIOMapper`), as in the predictor and the demo.
* checkpoints load through :class:`~retinamask_d2.checkpoint.checked.CheckedCheckpointer`
  (errors name the file; ``--resume`` falls back to the newest intact checkpoint; weights that
  do not fit a RetinaMask are refused unless a documented fresh start).
* ``test`` maps the predicted classes to a test set's by name where
  ``MODEL.RETINAMASK.TEST_CLASSES_BY_NAME`` allows it
  (:mod:`~retinamask_d2.evaluation.class_mapping`).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, create_ddp_model
from detectron2.engine.train_loop import TrainerBase
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from retinamask_d2.data.mapper import ImageIOMapper
from retinamask_d2.data.train_loader import (
    ResumableTrainLoader,
    build_resumable_train_loader,
    run_seed,
)

from ..checkpoint.checked import CheckedCheckpointer
from ..evaluation.class_mapping import ClassRemap, class_index_map
from .amp import step_trainer_class
from .hooks import ReproducibleSteps


class Trainer(DefaultTrainer):
    """detectron2's ``DefaultTrainer`` plus CPU processes, COCO evaluation and exact resume."""

    def __init__(self, cfg: CfgNode):
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())

        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)

        model = create_ddp_model(model, broadcast_buffers=False, **ddp_device_kwargs(model))
        trainer_class = step_trainer_class(cfg.SOLVER.AMP.ENABLED, model)
        self._trainer = trainer_class(model, data_loader, optimizer)

        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = CheckedCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self), fit=weights_fit(cfg)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg

        self.register_hooks(self.build_hooks())

    def state_dict(self) -> dict:
        # detectron2 v0.6 leaves the optimizer (momentum) out of checkpoints; later versions save
        # it under "_trainer", as this does, so checkpoints of both resume the same way.
        state = super().state_dict()
        state["_trainer"] = self._trainer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        TrainerBase.load_state_dict(self, state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logging.getLogger(__name__).warning(
                "the checkpoint has no optimizer state: SGD momentum restarts from zero"
            )

    def build_hooks(self) -> list:
        loader = self.data_loader
        if isinstance(loader, ResumableTrainLoader):
            seed = loader.batch_sampler.seed
        else:
            seed = run_seed(self.cfg)
        return [ReproducibleSteps(seed), *super().build_hooks()]

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
            logging.getLogger(__name__).warning(
                f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN}: using detectron2's "
                "loader, whose position is not checkpointed; a resumed run will see other images"
            )
            return build_detection_train_loader(cfg, mapper=ImageIOMapper(cfg, is_train=True))
        return build_resumable_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=ImageIOMapper(cfg, is_train=False)
        )

    @classmethod
    def test(cls, cfg: CfgNode, model: torch.nn.Module, evaluators=None):
        index_maps = {name: class_index_map(cfg, name) for name in cfg.DATASETS.TEST}
        if all(index_map is None for index_map in index_maps.values()):
            return super().test(cfg, model, evaluators)
        results = OrderedDict()
        for i, (name, index_map) in enumerate(index_maps.items()):
            one = cfg.clone()
            one.defrost()
            one.DATASETS.TEST = (name,)
            evaluator = None if evaluators is None else [evaluators[i]]
            remapped = model if index_map is None else ClassRemap(model, index_map)
            results[name] = super().test(one, remapped, evaluator)
        return results if len(results) > 1 else results[name]

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        tasks = ("bbox", "segm") if predicts_masks(cfg) else ("bbox",)
        return COCOEvaluator(
            dataset_name, tasks=tasks, output_dir=output_folder, use_fast_impl=False
        )


def weights_fit(cfg: CfgNode) -> str | None:
    """How MODEL.WEIGHTS and resumed checkpoints are checked against the model: RetinaMask's
    documented fresh starts are known (see ``checkpoint/compatibility.py``); other
    meta-architectures keep detectron2's warnings."""
    return "training" if cfg.MODEL.META_ARCHITECTURE == "RetinaMask" else None


def predicts_masks(cfg: CfgNode) -> bool:
    """Whether the model's test-time outputs have masks (``TEST_TOPK_MASKS`` 0: boxes only)."""
    if not cfg.MODEL.MASK_ON:
        return False
    return cfg.MODEL.META_ARCHITECTURE != "RetinaMask" or cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS > 0


def ddp_device_kwargs(model: torch.nn.Module) -> dict:
    """``device_ids=None`` for a model on the CPU (DistributedDataParallel refuses a device list
    there); nothing for a GPU model, where detectron2's default ``[local_rank]`` is right."""
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    return {"device_ids": None} if on_cpu else {}
