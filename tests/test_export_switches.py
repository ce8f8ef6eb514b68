"""Every inference key reaches the exported model as it reaches the eager one.

For each key of ``MODEL.RETINAMASK``, ``MODEL.RETINANET`` and ``TEST`` that shapes inference,
``EXPORT_SWITCHES`` holds a value that changes the eager results on the test image; the model
exported with it must give the changed results, and its description must record the value. Keys
that do not shape inference after the weights are listed in ``NOT_SWITCHES`` with the reason; a
key in neither fails ``test_every_key_is_classified``.
"""

import pytest
import torch
from detectron2.config import get_cfg

from retinamask_d2 import add_retinamask_config
from retinamask_d2.export import describe, export_onnx, export_torchscript, inference_settings
from tests.common import config_leaf_keys
from tests.export_common import (
    SAMPLE_SHAPE,
    assert_same_results,
    detecting_cfg,
    detecting_model,
    eager_instances,
    random_image,
)

# key: a value that changes the eager results on TEST_IMAGE
EXPORT_SWITCHES = {
    "MODEL.RETINANET.SCORE_THRESH_TEST": 0.8,
    "MODEL.RETINANET.TOPK_CANDIDATES_TEST": 4,
    "MODEL.RETINANET.NMS_THRESH_TEST": 0.2,
    "MODEL.RETINANET.BBOX_REG_WEIGHTS": (2.0, 2.0, 1.0, 1.0),
    "TEST.DETECTIONS_PER_IMAGE": 7,
    "MODEL.RETINAMASK.TEST_TOPK_MASKS": 4,
    "MODEL.RETINAMASK.TEST_MASK_SCORE_THRESH": 0.8,
    "MODEL.RETINAMASK.DROP_UNMASKED": True,
    "MODEL.RETINAMASK.CLASS_AGNOSTIC_NMS": True,
    "MODEL.RETINAMASK.MASK_BOX_SCALE": 1.5,
    "MODEL.RETINAMASK.MASK_IN_FEATURES": ["p4", "p5"],
    "MODEL.RETINAMASK.CANONICAL_BOX_SIZE": 28,
    "MODEL.RETINAMASK.CANONICAL_LEVEL": 7,
}
# Also checked with ONNX (onnxruntime): the mask choice and the detection count.
ONNX_SWITCHES = ["MODEL.RETINAMASK.TEST_MASK_SCORE_THRESH", "MODEL.RETINAMASK.DROP_UNMASKED"]
TRAINING = "training only"
STRUCTURE = "the network's structure: held by the traced modules and weights themselves"
NOT_SWITCHES = {
    "MODEL.RETINAMASK.TRAIN_TOPK": TRAINING,
    "MODEL.RETINAMASK.TRAIN_SCORE_THRESH": TRAINING,
    "MODEL.RETINAMASK.TRAIN_TOPK_CANDIDATES": TRAINING,
    "MODEL.RETINAMASK.TRAIN_NMS_THRESH": TRAINING,
    "MODEL.RETINAMASK.POSITIVE_IOU": TRAINING,
    "MODEL.RETINAMASK.MASK_LOSS_WEIGHT": TRAINING,
    "MODEL.RETINAMASK.MASK_DICE_WEIGHT": TRAINING,
    "MODEL.RETINAMASK.ALLOW_LOW_QUALITY_MATCHES": TRAINING,
    "MODEL.RETINAMASK.BOX_REG_LOSS_WEIGHT": TRAINING,
    "MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.ENABLED": TRAINING,
    "MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.MOMENTUM": TRAINING,
    "MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.BETA_MAX": TRAINING,
    "MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.BETA_MIN": TRAINING,
    "MODEL.RETINAMASK.FPN_NORM_CONV_BIAS": STRUCTURE,
    "MODEL.RETINAMASK.MASK_NMS.ENABLED": "refused by the export (tests/test_export.py)",
    "MODEL.RETINAMASK.MASK_NMS.BOX_THRESH": "mask NMS only, which the export refuses",
    "MODEL.RETINAMASK.MASK_NMS.THRESH": "mask NMS only, which the export refuses",
    "MODEL.RETINAMASK.MASK_NMS.PRE_TOPK": "mask NMS only, which the export refuses",
    "MODEL.RETINAMASK.CLASS_NAMES": "metadata: in the description (tests/test_export.py)",
    "MODEL.RETINAMASK.DATASET_CATEGORY_IDS": "metadata of the evaluation",
    "MODEL.RETINAMASK.TEST_CLASSES_BY_NAME": "metadata of the evaluation",
    "MODEL.RETINAMASK.TEST_EMBEDDINGS": "an eager-only extra output; the file's outputs are fixed",
    "MODEL.RETINAMASK.MASK_ROI": "followed through the mask branch (tests/test_export_oriented.py)",
    "MODEL.RETINAMASK.ORIENTED.MIN_ELONGATION": "oriented RoIs (tests/test_export_oriented.py)",
    "MODEL.RETINAMASK.ORIENTED.LENGTH_PAD": "oriented RoIs (tests/test_export_oriented.py)",
    "MODEL.RETINAMASK.ORIENTED.WIDTH_PAD": "oriented RoIs (tests/test_export_oriented.py)",
    "MODEL.RETINAMASK.ORIENTED.MIN_WIDTH_RATIO": "oriented RoIs (tests/test_export_oriented.py)",
    "MODEL.RETINAMASK.ORIENTED.HEAD_CONV_DIM": STRUCTURE,
    "MODEL.RETINAMASK.ORIENTED.LOSS_WEIGHT": TRAINING,
    "MODEL.RETINAMASK.ATSS.ENABLED": TRAINING,
    "MODEL.RETINAMASK.ATSS.TOPK": TRAINING,
    "MODEL.RETINANET.NUM_CLASSES": STRUCTURE,
    "MODEL.RETINANET.IN_FEATURES": STRUCTURE,
    "MODEL.RETINANET.NUM_CONVS": STRUCTURE,
    "MODEL.RETINANET.NORM": STRUCTURE,
    "MODEL.RETINANET.PRIOR_PROB": "initialisation of the weights",
    "MODEL.RETINANET.IOU_THRESHOLDS": TRAINING,
    "MODEL.RETINANET.IOU_LABELS": TRAINING,
    "MODEL.RETINANET.FOCAL_LOSS_GAMMA": TRAINING,
    "MODEL.RETINANET.FOCAL_LOSS_ALPHA": TRAINING,
    "MODEL.RETINANET.SMOOTH_L1_LOSS_BETA": TRAINING,
    "MODEL.RETINANET.BBOX_REG_LOSS_TYPE": TRAINING,
    "TEST.EXPECTED_RESULTS": "the training script's check",
    "TEST.EVAL_PERIOD": TRAINING,
    "TEST.KEYPOINT_OKS_SIGMAS": "keypoint evaluation",
    "TEST.AUG.ENABLED": "test-time augmentation: a wrapper around the model, not the model",
    "TEST.AUG.MIN_SIZES": "test-time augmentation: a wrapper around the model, not the model",
    "TEST.AUG.MAX_SIZE": "test-time augmentation: a wrapper around the model, not the model",
    "TEST.AUG.FLIP": "test-time augmentation: a wrapper around the model, not the model",
    "TEST.PRECISE_BN.ENABLED": TRAINING,
    "TEST.PRECISE_BN.NUM_ITER": TRAINING,
}
TEST_IMAGE = random_image((80, 200), 1)  # another size than the traced sample's


def test_every_key_is_classified():
    cfg = get_cfg()
    add_retinamask_config(cfg)
    keys = set()
    for name in ("MODEL.RETINAMASK", "MODEL.RETINANET", "TEST"):
        node = cfg
        for part in name.split("."):
            node = node[part]
        keys |= config_leaf_keys(node, f"{name}.")
    assert keys == set(EXPORT_SWITCHES) | set(NOT_SWITCHES)
    assert not set(EXPORT_SWITCHES) & set(NOT_SWITCHES)
    # The description records every switch (and mask NMS, off in every exported file).
    recorded = set(inference_settings(detecting_model()))
    assert recorded == set(EXPORT_SWITCHES) | {"MODEL.RETINAMASK.MASK_NMS.ENABLED"}


def _results(instances) -> list[torch.Tensor]:
    fields = [instances.pred_boxes.tensor, instances.scores, instances.pred_classes]
    return fields + ([instances.pred_masks] if instances.has("pred_masks") else [])


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b, strict=True)
    )


def _run_exported(format: str, model, folder):
    sample = random_image(SAMPLE_SHAPE, 0)
    if format == "torchscript":
        export_torchscript(model, sample, folder / "model.ts")
        with torch.no_grad():
            return torch.jit.load(str(folder / "model.ts"))(TEST_IMAGE)
    pytest.importorskip("onnx")  # the export extra
    onnxruntime = pytest.importorskip("onnxruntime")
    export_onnx(model, sample, folder / "model.onnx")
    session = onnxruntime.InferenceSession(
        str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"image": TEST_IMAGE.numpy()})


@pytest.fixture(scope="module")
def default_results():
    return _results(eager_instances(detecting_model(), TEST_IMAGE))


@pytest.mark.parametrize(
    "key,format",
    [(key, "torchscript") for key in EXPORT_SWITCHES] + [(key, "onnx") for key in ONNX_SWITCHES],
)
def test_exported_model_follows_the_key(key, format, default_results, tmp_path):
    value = EXPORT_SWITCHES[key]
    model = detecting_model({key: value})
    switched = eager_instances(model, TEST_IMAGE)
    assert not _same(default_results, _results(switched))  # the key changes the eager results

    assert_same_results(_run_exported(format, model, tmp_path), switched)
    settings = describe(detecting_cfg(), model, format, "model")["postprocessing_inside"]
    recorded = settings["settings"][key]
    assert recorded == (list(value) if isinstance(value, tuple) else value)
