"""RetinaMask's inference after the box branch: which detections get masks, clipping, pasting."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from tests.common import build_tiny_model, get_tiny_cfg

IMAGE_SIZE = (64, 64)
ROOT = Path(__file__).resolve().parents[1]


def _detections(boxes: list[list[float]], classes: list[int] | None = None) -> Instances:
    dets = Instances(IMAGE_SIZE)
    dets.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    dets.scores = torch.linspace(0.9, 0.5, len(boxes))
    dets.pred_classes = torch.tensor(classes or [0] * len(boxes))
    return dets


def _copy(instances: Instances) -> Instances:
    """A deep copy: detector_postprocess scales the boxes of its input in place."""
    fields = {
        k: Boxes(v.tensor.clone()) if isinstance(v, Boxes) else v.clone()
        for k, v in instances.get_fields().items()
    }
    return Instances(instances.image_size, **fields)


def _infer(model, detections: Instances, height: int = 64, width: int = 64) -> Instances:
    """The model's inference on a 64 x 64 image whose box branch found ``detections``."""
    model.forward_inference = lambda images, features, predictions: [_copy(detections)]
    torch.manual_seed(0)
    image = torch.randint(0, 255, (3, *IMAGE_SIZE)).float()
    with torch.no_grad():
        (output,) = model([{"image": image, "height": height, "width": width}])
    return output["instances"]


def _model(**retinamask_options):
    cfg = get_tiny_cfg()
    cfg.INPUT.MIN_SIZE_TEST = cfg.INPUT.MAX_SIZE_TEST = 64
    for key, value in retinamask_options.items():
        cfg.MODEL.RETINAMASK[key] = value
    torch.manual_seed(0)
    return build_tiny_model(cfg).eval()


@pytest.mark.parametrize("drop_unmasked", [False, True])
def test_only_the_top_k_detections_get_masks(drop_unmasked):
    model = _model(TEST_TOPK_MASKS=3, DROP_UNMASKED=drop_unmasked)
    calls = []
    model.mask_branch.mask_head.register_forward_pre_hook(lambda _, a: calls.append(len(a[0])))
    dets = _detections([[4, 4, 30, 30]] * 7, classes=[0, 1, 2, 0, 1, 2, 0])

    result = _infer(model, dets)

    assert calls == [3]  # the head runs on the top 3 only
    assert len(result) == (3 if drop_unmasked else 7)
    torch.testing.assert_close(result.scores, dets.scores[: len(result)])
    assert result.pred_masks.shape == (len(result), *IMAGE_SIZE)
    assert result.pred_masks[:3].flatten(1).any(dim=1).all()  # 26 px boxes, real masks
    assert not result.pred_masks[3:].any()  # kept detections get empty masks


@pytest.mark.parametrize("topk", [3, 7, 10])
def test_outputs_equal_detectron2_postprocess_of_all_detections(topk):
    # The empty masks of the detections beyond the top k are made at the output size instead
    # of being pasted: the output must be what detectron2's detector_postprocess gives for the
    # whole list with empty M x M masks (empty boxes dropped, boxes scaled, masks pasted).
    model = _model(TEST_TOPK_MASKS=topk)
    boxes = [[4, 4, 30, 30], [70, 8, 90, 20], [10, 30, 60, 50], [2, 2, 12, 40]]
    boxes += [[66, 66, 80, 80], [20, 20, 40, 28], [0, 0, 64, 64]]  # 1 and 4 leave the image
    dets = _detections(boxes, classes=[0, 1, 2, 0, 1, 2, 0])
    masked = []
    model.mask_branch.mask_head.register_forward_hook(
        lambda _, args, out: masked.append(_copy(args[1][0]))
    )

    result = _infer(model, dets, height=96, width=80)

    (with_masks,) = masked
    rest = _copy(dets)[len(with_masks) :]
    rest.pred_boxes.clip(IMAGE_SIZE)
    rest.pred_masks = torch.zeros((len(rest), *with_masks.pred_masks.shape[1:]))
    everything = Instances.cat([with_masks, rest]) if len(rest) else with_masks
    expected = detector_postprocess(everything, 96, 80)
    assert result.image_size == expected.image_size == (96, 80)
    assert len(result) == len(expected) == 5
    assert set(result.get_fields()) == set(expected.get_fields())
    for name, value in expected.get_fields().items():
        value = value.tensor if isinstance(value, Boxes) else value
        got = result.get(name)
        got = got.tensor if isinstance(got, Boxes) else got
        assert got.dtype == value.dtype and torch.equal(got, value), name
    first_unmasked = {3: 2, 7: 5, 10: 5}[topk]  # the top k, less its empty boxes
    assert result.pred_masks[:first_unmasked].flatten(1).any(dim=1).all()
    assert not result.pred_masks[first_unmasked:].any()


def test_masks_are_predicted_for_the_boxes_clipped_to_the_image():
    # detector_postprocess pastes each mask into its box clipped to the image, so the mask must
    # be predicted for the clipped box, not for the part of the box outside the image.
    model = _model()
    boxes = []
    model.mask_branch.mask_head.register_forward_pre_hook(
        lambda _, args: boxes.append(args[1][0].pred_boxes.tensor.clone())
    )
    crossing = _detections([[-16, 4, 30, 30], [40, 40, 80, 70]])
    inside = _detections([[0, 4, 30, 30], [40, 40, 64, 64]])

    result = _infer(model, crossing)
    expected = _infer(model, inside)

    torch.testing.assert_close(boxes[0], inside.pred_boxes.tensor)
    torch.testing.assert_close(result.pred_boxes.tensor, inside.pred_boxes.tensor)
    assert torch.equal(result.pred_masks, expected.pred_masks)


def test_zero_top_k_means_box_only_inference():
    model = _model(TEST_TOPK_MASKS=0)
    calls = []
    model.mask_branch.mask_head.register_forward_pre_hook(lambda *_: calls.append(1))
    result = _infer(model, _detections([[4, 4, 30, 30]] * 3), height=128, width=128)
    assert len(result) == 3 and not result.has("pred_masks") and not calls
    torch.testing.assert_close(result.pred_boxes.tensor, torch.tensor([[8.0, 8, 60, 60]] * 3))


def test_negative_top_k_is_a_clear_error():
    with pytest.raises(ValueError, match="MODEL.RETINAMASK.TEST_TOPK_MASKS"):
        _model(TEST_TOPK_MASKS=-1)


# Runs in a fresh process: the growth of its peak resident memory over a warm-up inference when
# a 64 x 64 input's results are asked at 2000 x 2000, with score threshold 0 (100 detections).
PEAK_MEMORY_SCRIPT = """
import resource, sys, torch
from tests.common import build_tiny_model, get_tiny_cfg
cfg = get_tiny_cfg()
cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS = int(sys.argv[1])
torch.manual_seed(0)
model = build_tiny_model(cfg).eval()
image = torch.rand(3, 64, 64) * 255
with torch.no_grad():
    model([{"image": image}])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (out,) = model([{"image": image, "height": 2000, "width": 2000}])
growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
masks = out["instances"].pred_masks
print(len(masks), int(masks.flatten(1).any(1).sum()), growth * 1024)
"""


def test_memory_of_unmasked_detections_is_bounded_by_the_masked_ones():
    # Each 2000 x 2000 mask is 4 MB: the 5 pasted masks and their copy in the results need about
    # 40 MB; the 95 empty ones would add 380 MB, and 380 more to join them (measured before:
    # 770 MB). The bound allows 3 copies of the pasted masks and 64 MB for the rest.
    result = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_SCRIPT, "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    detections, nonempty, growth = map(int, result.stdout.split())
    assert detections == 100 and 0 < nonempty <= 5
    assert growth < 3 * 5 * 2000 * 2000 + 64 * 2**20, growth / 2**20
