"""Mixed-precision training on any device: detectron2's ``AMPTrainer`` on a GPU, bf16 autocast on
the CPU."""

from __future__ import annotations

import time

import torch
from detectron2.engine import AMPTrainer, SimpleTrainer


class CPUAutocastTrainer(SimpleTrainer):
    """``SimpleTrainer`` whose forward pass runs under CPU autocast to bfloat16.

    detectron2's ``AMPTrainer`` (v0.6 and current main alike) asserts that CUDA is available and
    uses ``torch.cuda.amp.autocast``, so ``SOLVER.AMP.ENABLED`` could not train on a CPU. bfloat16
    has float32's exponent range: gradients need no scaling, hence no ``GradScaler`` (the loss,
    its backward and the SGD step are those of ``SimpleTrainer``). Autocast keeps the losses in
    float32.
    """

    def run_step(self) -> None:
        if not self.model.training:
            raise RuntimeError("CPUAutocastTrainer: the model was switched to eval mode")
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_dict = self.model(data)
        losses = sum(loss_dict.values())
        self.optimizer.zero_grad()
        losses.backward()
        self._write_metrics(loss_dict, data_time)
        self.optimizer.step()


def step_trainer_class(amp_enabled: bool, model: torch.nn.Module) -> type[SimpleTrainer]:
    """The class that runs the training steps: ``SimpleTrainer`` without AMP; with it,
    detectron2's ``AMPTrainer`` (fp16 and a gradient scaler) for a model on a GPU and
    :class:`CPUAutocastTrainer` for one on the CPU."""
    if not amp_enabled:
        return SimpleTrainer
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    return CPUAutocastTrainer if on_cpu else AMPTrainer
