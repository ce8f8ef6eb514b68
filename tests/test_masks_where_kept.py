"""Masks only for the detections a caller keeps: the model's mask score threshold and the
predictor's confidence threshold give the same instances and masks as filtering afterwards."""

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer

from retinamask_d2.predictor import RetinaMaskPredictor
from tests.common import build_tiny_model, get_tiny_cfg

THRESHOLD = 0.5


def _spread_scores(model: torch.nn.Module) -> None:
    """Class logits spread 10x wider, so that a random model scores a few tens of detections
    per image above 0.5 and the rest below (the prior's bias keeps them all near 0.01)."""
    with torch.no_grad():
        model.head.cls_score.weight.mul_(10.0)
        torch.nn.init.constant_(model.head.cls_score.bias, -4.5)


def _image(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def checkpoint_cfg(tmp_path_factory):
    torch.manual_seed(0)
    cfg = get_tiny_cfg()
    model = build_tiny_model(cfg)
    _spread_scores(model)
    folder = tmp_path_factory.mktemp("masks_where_kept")
    DetectionCheckpointer(model, save_dir=str(folder)).save("model_final")
    cfg.MODEL.WEIGHTS = str(folder / "model_final.pth")
    return cfg


def _mask_head_counts(predictor: RetinaMaskPredictor) -> list[int]:
    counts: list[int] = []
    head = predictor.model.mask_branch.mask_head
    head.register_forward_hook(lambda _m, args, _out: counts.append(len(args[0])))
    return counts


def test_predictor_threshold_keeps_todays_instances_and_masks_computing_only_theirs(
    checkpoint_cfg,
):
    everything = RetinaMaskPredictor(checkpoint_cfg)
    confident = RetinaMaskPredictor(checkpoint_cfg, confidence_threshold=THRESHOLD)
    counts = _mask_head_counts(confident)
    images = [_image(0), _image(1, 128, 96)]

    for full, kept in zip(everything.predict_batch(images), confident.predict_batch(images)):
        expected = full[full.scores >= THRESHOLD]
        assert 0 < len(kept) < len(full)  # the threshold drops some and keeps some
        assert len(kept) < checkpoint_cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS
        assert torch.equal(kept.pred_boxes.tensor, expected.pred_boxes.tensor)
        assert torch.equal(kept.scores, expected.scores)
        assert torch.equal(kept.pred_classes, expected.pred_classes)
        assert kept.pred_masks.dtype == torch.bool and kept.pred_masks.any()
        assert torch.equal(kept.pred_masks, expected.pred_masks)
    confident_counts = [
        int((r.scores >= THRESHOLD).sum()) for r in everything.predict_batch(images)
    ]
    assert counts == [sum(confident_counts)]  # one batch: the mask head saw only the kept ones


def test_mask_score_threshold_gives_masks_to_confident_detections_only(checkpoint_cfg):
    cfg = checkpoint_cfg.clone()
    cfg.MODEL.RETINAMASK.TEST_MASK_SCORE_THRESH = THRESHOLD
    top50 = RetinaMaskPredictor(checkpoint_cfg).predict(_image(2))
    masked = RetinaMaskPredictor(cfg).predict(_image(2))

    confident = top50.scores >= THRESHOLD
    assert 0 < int(confident.sum()) < len(top50)
    # The same detections; the confident ones keep their masks, the others' are empty.
    assert torch.equal(masked.pred_boxes.tensor, top50.pred_boxes.tensor)
    assert torch.equal(masked.pred_masks[confident], top50.pred_masks[confident])
    assert top50.pred_masks[~confident].any() and not masked.pred_masks[~confident].any()


def test_mask_score_threshold_is_capped_by_test_topk_masks(checkpoint_cfg):
    cfg = checkpoint_cfg.clone()
    cfg.MODEL.RETINAMASK.TEST_MASK_SCORE_THRESH = 0.0
    cfg.MODEL.RETINAMASK.TEST_TOPK_MASKS = 3
    predictor = RetinaMaskPredictor(cfg, confidence_threshold=0.0)
    counts = _mask_head_counts(predictor)
    instances = predictor.predict(_image(3))
    assert len(instances) > 3 and counts == [3]
    assert instances.pred_masks[:3].any() and not instances.pred_masks[3:].any()


def test_no_detection_above_the_mask_score_threshold_gives_empty_bool_masks(checkpoint_cfg):
    cfg = checkpoint_cfg.clone()
    cfg.MODEL.RETINAMASK.TEST_MASK_SCORE_THRESH = 1.0
    predictor = RetinaMaskPredictor(cfg)
    counts = _mask_head_counts(predictor)
    instances = predictor.predict(_image(4))
    assert len(instances) > 0 and counts == [0]
    assert instances.pred_masks.dtype == torch.bool and not instances.pred_masks.any()
