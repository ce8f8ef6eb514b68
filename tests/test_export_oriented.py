"""The exported model with oriented mask RoIs gives the eager model's results."""

import math

import torch

from retinamask_d2.export import export_torchscript
from tests.common import build_tiny_model
from tests.export_common import (
    CLASS_BIAS,
    MASK_LOGIT_SCALE,
    OTHER_SHAPES,
    SAMPLE_SHAPE,
    assert_same_results,
    detecting_cfg,
    eager_instances,
    random_image,
)


def _oriented_detecting_model():
    """``detecting_model`` with MASK_ROI "oriented", its frame head turning every RoI's frame
    by 30 deg (a rectangle of 0.8 x 0.2 the box's diagonal, padded)."""
    cfg = detecting_cfg()
    cfg.MODEL.RETINAMASK.MASK_ROI = "oriented"
    torch.manual_seed(0)
    model = build_tiny_model(cfg).eval()
    angle = math.radians(30)
    with torch.no_grad():
        model.head.cls_score.weight.mul_(10.0)
        model.head.cls_score.bias.fill_(CLASS_BIAS)
        model.mask_branch.mask_head.predictor.weight.mul_(MASK_LOGIT_SCALE)
        predictor = model.mask_branch.frame_head.predictor
        predictor.weight.zero_()
        predictor.bias.copy_(
            torch.tensor(
                [0.0, 0.0, math.log(0.8), math.log(0.2), math.cos(2 * angle), math.sin(2 * angle)]
            )
        )
    return model


def test_exported_oriented_model_equals_eager_on_other_sizes(tmp_path):
    model = _oriented_detecting_model()
    path = tmp_path / "model.ts"
    export_torchscript(model, random_image(SAMPLE_SHAPE, 0), path)
    exported = torch.jit.load(str(path))
    for i, shape in enumerate(OTHER_SHAPES):
        image = random_image(shape, i + 1)
        with torch.no_grad():
            outputs = exported(image)
        assert_same_results(outputs, eager_instances(model, image))
