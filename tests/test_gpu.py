"""The model on a GPU: a training step in fp32 and in AMP, inference, and the mask branch in both
memory layouts. Run by ``benchmarks/timing/gpu_check.sh``; skipped without CUDA.

``RETINAMASK_TEST_DEVICE`` picks the device (default "cuda"); "cpu" runs the same checks on the
CPU, which is how ``gpu_check.sh --cpu-dry-run`` checks them on a machine without a GPU.
"""

import itertools
import os

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import SimpleTrainer
from detectron2.utils.events import EventStorage

from retinamask_d2.engine.amp import step_trainer_class
from retinamask_d2.predictor import RetinaMaskPredictor
from tests.common import build_tiny_model, get_tiny_cfg, training_batch

DEVICE = os.environ.get("RETINAMASK_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(
    DEVICE.startswith("cuda") and not torch.cuda.is_available(), reason="needs a CUDA device"
)


@pytest.fixture(autouse=True)
def no_tf32():
    """Full float32 matmuls and convolutions, so that results compare with the CPU's."""
    if not DEVICE.startswith("cuda"):
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _device_cfg():
    cfg = get_tiny_cfg()
    cfg.MODEL.DEVICE = DEVICE
    return cfg


def _steps_until_weights_change(trainer, model, max_steps: int = 5) -> dict:
    """Run steps until a weight changes (a GradScaler skips the steps whose fp16 gradients
    overflow, as its first ones can); return the losses of the last step."""
    seen: dict = {}
    model.register_forward_hook(lambda _m, _a, out: seen.update(out) and None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with EventStorage(0):
        for step in range(max_steps):
            trainer.iter = step
            trainer.run_step()
            if any(not torch.equal(p, before[n]) for n, p in model.named_parameters()):
                return seen
    raise AssertionError(f"no weight changed in {max_steps} steps")


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "amp"])
def test_training_step_on_the_device(amp):
    torch.manual_seed(0)
    model = build_tiny_model(_device_cfg())
    assert all(p.device.type == torch.device(DEVICE).type for p in model.parameters())
    trainer_class = step_trainer_class(amp, model)
    assert (trainer_class is SimpleTrainer) == (not amp)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    trainer = trainer_class(model, itertools.repeat(training_batch()), optimizer)
    losses = _steps_until_weights_change(trainer, model)
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_mask"}
    for name, loss in losses.items():
        assert loss.dtype == torch.float32 and torch.isfinite(loss), name


def test_inference_on_the_device_matches_the_cpu(tmp_path):
    torch.manual_seed(0)
    cfg = get_tiny_cfg()
    model = build_tiny_model(cfg)
    with torch.no_grad():  # a few tens of confident detections (see test_masks_where_kept)
        model.head.cls_score.weight.mul_(10.0)
        torch.nn.init.constant_(model.head.cls_score.bias, -4.5)
    DetectionCheckpointer(model, save_dir=str(tmp_path)).save("model")
    cfg.MODEL.WEIGHTS = str(tmp_path / "model.pth")
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    on_cpu = RetinaMaskPredictor(cfg, confidence_threshold=0.5).predict(image)
    cfg.MODEL.DEVICE = DEVICE
    on_device = RetinaMaskPredictor(cfg, confidence_threshold=0.5).predict(image)

    assert len(on_cpu) > 0 and len(on_device) == len(on_cpu)
    torch.testing.assert_close(on_device.scores, on_cpu.scores, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        on_device.pred_boxes.tensor, on_cpu.pred_boxes.tensor, atol=1e-2, rtol=1e-4
    )
    differ = (on_device.pred_masks != on_cpu.pred_masks).sum()
    assert differ <= 0.001 * on_cpu.pred_masks.sum()  # pixels on the 0.5 threshold may flip


def test_mask_branch_on_the_device_in_both_memory_layouts():
    torch.manual_seed(0)
    model = build_tiny_model(_device_cfg()).eval()
    head = model.mask_branch.mask_head
    resolution = model.mask_branch.pooler.output_size[0]
    pooled = torch.randn(7, 64, resolution, resolution, device=DEVICE)
    with torch.no_grad():
        contiguous = head.layers(pooled)
        channels_last = head.layers(pooled.contiguous(memory_format=torch.channels_last))
    assert contiguous.shape == (7, 3, 2 * resolution, 2 * resolution)
    torch.testing.assert_close(channels_last, contiguous, atol=1e-4, rtol=1e-4)

    # The branch end to end on the device: every box gets a mask on the device.
    from detectron2.structures import Boxes, Instances

    features = [torch.randn(1, 64, s, s, device=DEVICE) for s in (16, 8, 4)]
    detections = Instances((128, 128))
    detections.pred_boxes = Boxes(torch.tensor([[4.0, 4, 60, 70], [30, 20, 120, 126]]))
    detections.pred_classes = torch.tensor([0, 2])
    detections.scores = torch.tensor([0.9, 0.8])
    with torch.no_grad():
        (masked,) = model.mask_branch.predict(features, [detections.to(DEVICE)])
    assert masked.pred_masks.shape == (2, 1, 2 * resolution, 2 * resolution)
    assert masked.pred_masks.device.type == torch.device(DEVICE).type
