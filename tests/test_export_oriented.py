"""The exported model with oriented mask RoIs gives the eager model's results, frames included."""

import math

import pytest
import torch

from retinamask_d2.export import (
    FRAMES_OUTPUT,
    OUTPUT_NAMES,
    describe,
    export_onnx,
    export_torchscript,
    output_names,
)
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
    # Frames included: the file's fifth output is the eager pred_frames (assert_same_results).
    model = _oriented_detecting_model()
    path = tmp_path / "model.ts"
    export_torchscript(model, random_image(SAMPLE_SHAPE, 0), path)
    exported = torch.jit.load(str(path))
    for i, shape in enumerate(OTHER_SHAPES):
        image = random_image(shape, i + 1)
        with torch.no_grad():
            outputs = exported(image)
        assert len(outputs) == 5
        instances = eager_instances(model, image)
        assert (instances.pred_frames[:, 4] != 0).any()  # the 30 deg frames are compared
        assert_same_results(outputs, instances)


def test_exported_oriented_model_in_onnx_gives_the_frames(tmp_path):
    pytest.importorskip("onnx")  # the export extra
    onnxruntime = pytest.importorskip("onnxruntime")
    model = _oriented_detecting_model()
    path = tmp_path / "model.onnx"
    export_onnx(model, random_image(SAMPLE_SHAPE, 0), path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [*OUTPUT_NAMES, FRAMES_OUTPUT]
    image = random_image(OTHER_SHAPES[1], 2)
    assert_same_results(session.run(None, {"image": image.numpy()}), eager_instances(model, image))


def test_description_lists_the_frames_output_of_oriented_models_only():
    model = _oriented_detecting_model()
    names = [o["name"] for o in describe(detecting_cfg(), model, "onnx", "m")["outputs"]]
    assert names == [*OUTPUT_NAMES, FRAMES_OUTPUT] == list(output_names(model))
    model.test_topk_masks = 0  # box-only inference: no masks, no frames
    assert output_names(model) == OUTPUT_NAMES
    names = [o["name"] for o in describe(detecting_cfg(), model, "onnx", "m")["outputs"]]
    assert names == list(OUTPUT_NAMES)
