"""The hook that makes a resumed run repeat the uninterrupted one exactly (same seed, same device).

detectron2's checkpoint holds the model, the optimizer, the scheduler and the iteration. Four
more things decide what the next steps compute, and this hook restores or removes each:

* the data: the :class:`~retinamask_d2.data.train_loader.ResumableTrainLoader` is started at the
  trainer's ``start_iter`` with the run's data seed, which is checkpointed (so even a run with
  ``SEED -1``, whose seed was drawn at random, resumes onto the same images);
* the global RNGs, which the model may use (e.g. Mask R-CNN samples proposals): they are seeded
  before every step from (seed, iteration, rank), so a step does not depend on what ran before it;
* float statistics that models keep outside their ``state_dict``: detectron2's dense detectors
  keep the running foreground count that normalises their losses (``loss_normalizer*``) as a
  plain attribute; its value is checkpointed and put back;
* TorchScript's optimising executor: a scripted function (RetinaNet's focal loss is fvcore's
  ``sigmoid_focal_loss_jit``) runs its first calls unoptimised while profiling and then a fused
  graph whose rounding differs, so a resumed process computed its first steps differently from
  the warmed-up uninterrupted one (gradients off by 1e-13, weights by 1e-5 a few steps later).
  Training runs with ``torch.jit.optimized_execution(False)``: the same graph at every call.
"""

from __future__ import annotations

import contextlib

import torch
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from torch.nn.parallel import DistributedDataParallel

from retinamask_d2.data.samplers import derive_seed
from retinamask_d2.data.train_loader import ResumableTrainLoader

# Prefix of the float attributes of detectron2's dense detectors (RetinaNet's `loss_normalizer`,
# FCOS's `loss_normalizer_cls`) that are not in their state_dict.
FLOAT_STATE_PREFIX = "loss_normalizer"
STEP_KEY = 0x5EED


class ReproducibleSteps(HookBase):
    """See the module docstring; ``seed`` is the run's data seed (the loader's if it has one)."""

    def __init__(self, seed: int):
        self.seed = seed
        self._unoptimized_jit = contextlib.ExitStack()

    def before_train(self) -> None:
        loader = self.trainer.data_loader
        if isinstance(loader, ResumableTrainLoader):
            loader.batch_sampler.seed = self.seed
            loader.start_iter = self.trainer.start_iter
        self._unoptimized_jit.enter_context(torch.jit.optimized_execution(False))

    def after_train(self) -> None:
        self._unoptimized_jit.close()

    def before_step(self) -> None:
        seed_all_rng(step_seed(self.seed, self.trainer.iter, comm.get_rank()))

    def state_dict(self) -> dict:
        return {"seed": self.seed, "float_state": model_float_state(self.trainer.model)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.seed = state_dict["seed"]
        load_model_float_state(self.trainer.model, state_dict["float_state"])


def step_seed(seed: int, iteration: int, rank: int) -> int:
    """The RNG seed of a step of a rank; the extra word keeps it apart from the sample seeds."""
    return derive_seed(seed, iteration, STEP_KEY, rank)


def _modules(model: torch.nn.Module):
    if isinstance(model, DistributedDataParallel):
        model = model.module
    return model.named_modules()


def model_float_state(model: torch.nn.Module) -> dict[str, float]:
    """The ``loss_normalizer*`` float attributes of ``model``'s modules, by dotted name."""
    return {
        f"{prefix}.{key}" if prefix else key: value
        for prefix, module in _modules(model)
        for key, value in vars(module).items()
        if key.startswith(FLOAT_STATE_PREFIX) and isinstance(value, float)
    }


def load_model_float_state(model: torch.nn.Module, state: dict[str, float]) -> None:
    modules = dict(_modules(model))
    for name, value in state.items():
        prefix, _, key = name.rpartition(".")
        setattr(modules[prefix], key, value)
