"""Mixed precision: SOLVER.AMP.ENABLED trains on the CPU (bf16 autocast, float32 finite losses, a
real step) and the predictor runs in bf16 on request."""

import itertools

import numpy as np
import pytest
import torch
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils.events import EventStorage

from retinamask_d2.engine.amp import CPUAutocastTrainer, step_trainer_class
from retinamask_d2.predictor import RetinaMaskPredictor
from tests.common import build_tiny_model, get_tiny_cfg, training_batch


def test_amp_picks_the_cpu_autocast_trainer_for_a_cpu_model():
    model = build_tiny_model()
    assert step_trainer_class(False, model) is SimpleTrainer
    assert step_trainer_class(True, model) is CPUAutocastTrainer
    assert issubclass(AMPTrainer, SimpleTrainer)  # the GPU choice, detectron2's own


def test_cpu_autocast_step_runs_in_bf16_with_float32_finite_losses_and_changes_weights():
    torch.manual_seed(0)
    model = build_tiny_model(get_tiny_cfg())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = CPUAutocastTrainer(model, itertools.repeat(training_batch()), optimizer)
    seen: dict = {}

    def record(name):
        def hook(_module, _args, out):
            seen[name] = out  # returns None: the output is left as it is

        return hook

    model.backbone.bottom_up.stem.conv1.register_forward_hook(record("conv"))
    model.register_forward_hook(record("losses"))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    with EventStorage(0) as storage:
        trainer.iter = 0
        trainer.run_step()

    assert seen["conv"].dtype == torch.bfloat16  # autocast was on
    losses = seen["losses"]
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    for name, loss in losses.items():
        assert loss.dtype == torch.float32 and torch.isfinite(loss), name
    assert storage.history("total_loss").latest() > 0
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    for part in ("backbone.", "head.", "mask_branch."):
        assert any(n.startswith(part) for n in changed), part
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_predictor_precision_runs_the_model_under_autocast():
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    dtypes = []
    for precision in ("fp32", "bf16"):
        predictor = RetinaMaskPredictor(cfg, precision=precision)
        conv = predictor.model.backbone.bottom_up.stem.conv1
        conv.register_forward_hook(lambda _m, _a, out: dtypes.append(out.dtype) and None)
        instances = predictor.predict(image)
        assert len(instances) > 0 and instances.pred_masks.dtype == torch.bool
        assert instances.pred_boxes.tensor.dtype == torch.float32  # decoded in float32
    assert dtypes == [torch.float32, torch.bfloat16]
    with pytest.raises(ValueError, match="precision"):
        RetinaMaskPredictor(cfg, precision="fp8")


def test_detectron2s_amp_trainer_needs_cuda_which_is_why_the_cpu_has_its_own():
    """detectron2's AMPTrainer (v0.6 here, the same on main) builds a torch.cuda GradScaler, which
    disables itself without CUDA, and its step asserts CUDA. Should that change, the CPU trainer
    can go."""
    if torch.cuda.is_available():
        pytest.skip("checks the behaviour without CUDA")
    model = build_tiny_model()
    with pytest.warns(UserWarning, match="CUDA is not available"):
        trainer = AMPTrainer(
            model, itertools.repeat(training_batch()), torch.optim.SGD(model.parameters())
        )
    assert not trainer.grad_scaler.is_enabled()
    with pytest.raises(AssertionError, match="CUDA is required"):
        trainer.run_step()
