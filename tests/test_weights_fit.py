"""Weights are checked against the model wherever they load: a checkpoint of another architecture
or class count is refused with what does not fit; the documented fresh starts of a training run
load with one line saying what starts fresh."""

import logging

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from retinamask_d2.checkpoint.checked import CheckedCheckpointer
from retinamask_d2.checkpoint.compatibility import LoadReport, judge_fit
from retinamask_d2.checkpoint.errors import CheckpointError, CheckpointMismatchError
from retinamask_d2.cli import UsageError, fall_back_to_cpu, require_weights
from retinamask_d2.predictor import RetinaMaskPredictor
from tests.common import get_tiny_cfg

MODEL_KEYS = [
    "backbone.bottom_up.stem.conv1.weight",
    "backbone.bottom_up.res2.0.conv1.weight",
    "backbone.top_block.p6.weight",
    "head.cls_score.weight",
    "head.bbox_pred.weight",
    "mask_branch.mask_head.mask_fcn1.weight",
    "mask_branch.mask_head.predictor.weight",
    "box_reg_loss.running_mean",
]


def _report(missing=(), unexpected=(), mis_shaped=()) -> LoadReport:
    return LoadReport(list(missing), list(unexpected), list(mis_shaped), MODEL_KEYS)


def test_a_complete_load_says_nothing():
    # The self-adjusting loss statistics are training-only: converted weights may lack them.
    report = LoadReport.from_incompatible(
        _Incompatible(["box_reg_loss.running_mean"], [], []), MODEL_KEYS
    )
    assert judge_fit(report, "w.pth", starting_training=False) == ""


class _Incompatible:
    def __init__(self, missing, unexpected, incorrect_shapes):
        self.missing_keys, self.unexpected_keys = missing, unexpected
        self.incorrect_shapes = incorrect_shapes


def test_documented_fresh_starts_of_a_training_run_are_one_line():
    bottom_up = [k for k in MODEL_KEYS if k.startswith("backbone.bottom_up.")]
    imagenet = _report(missing=[k for k in MODEL_KEYS if k not in bottom_up], unexpected=["fc"])
    assert judge_fit(imagenet, "R-50.pkl", True) == (
        "R-50.pkl: an ImageNet backbone: everything but backbone.bottom_up starts fresh"
    )
    mask = [k for k in MODEL_KEYS if k.startswith("mask_branch.")]
    p6 = ("backbone.top_block.p6.weight", (64, 512, 3, 3), (64, 64, 3, 3))
    retinanet = _report(missing=[*mask, p6[0]], mis_shaped=[p6])
    assert judge_fit(retinanet, "r.pth", True) == (
        "r.pth: a detectron2 RetinaNet checkpoint: the mask branch and P6 start fresh"
    )
    assert judge_fit(_report(missing=mask), "r.pth", True).endswith("the mask branch starts fresh")
    classes = [
        ("head.cls_score.weight", (27, 64, 3, 3), (36, 64, 3, 3)),
        ("mask_branch.mask_head.predictor.weight", (3, 32, 1, 1), (4, 32, 1, 1)),
    ]
    other_count = _report(missing=[k for k, _, _ in classes], mis_shaped=classes)
    assert judge_fit(other_count, "c.pth", True) == (
        "c.pth: a checkpoint of another class count: the class layers (head.cls_score, "
        "mask_branch.mask_head.predictor) start fresh"
    )
    # None of them is accepted for inference (or resuming): the fresh parts would be random.
    for report in (imagenet, retinanet, other_count):
        with pytest.raises(CheckpointMismatchError, match="does not fit the model"):
            judge_fit(report, "w.pth", starting_training=False)


def test_a_mismatch_lists_what_does_not_fit():
    shape = ("head.bbox_pred.weight", (36, 64, 3, 3), (9, 64, 3, 3))
    report = _report(
        missing=["backbone.bottom_up.res2.0.conv1.weight", shape[0]],
        unexpected=["backbone.bottom_up.res5.1.conv2.weight", "backbone.bottom_up.res5.1.x"],
        mis_shaped=[shape],
    )
    with pytest.raises(CheckpointMismatchError) as error:
        judge_fit(report, "r18.pth", starting_training=True)  # no documented case either
    assert str(error.value) == (
        "r18.pth does not fit the model: parameters 1 of another shape (head.bbox_pred.weight "
        "[36, 64, 3, 3] in the file, [9, 64, 3, 3] in the model); 1 not in the file "
        "(backbone.bottom_up.res2 (1)); 2 in the file that the model has not "
        "(backbone.bottom_up.res5 (2)); start from weights of this architecture, an ImageNet "
        "backbone or a detectron2 RetinaNet"
    )


@pytest.fixture(scope="module")
def three_class_weights(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    DetectionCheckpointer(build_model(get_tiny_cfg(num_classes=3)), str(folder)).save("three")
    return str(folder / "three.pth")


def test_the_predictor_refuses_weights_of_another_class_count_or_depth(three_class_weights):
    cfg = get_tiny_cfg(num_classes=4)
    cfg.MODEL.WEIGHTS = three_class_weights
    with pytest.raises(CheckpointMismatchError) as error:
        RetinaMaskPredictor(cfg)
    message = str(error.value)
    assert message.startswith(f"{three_class_weights} does not fit the model: parameters 4 of")
    assert (
        "head.cls_score.weight [27, 64, 3, 3] in the file, [36, 64, 3, 3] in the model" in message
    )
    deeper = get_tiny_cfg(num_classes=3)
    deeper.MODEL.RESNETS.DEPTH = 34  # R-34 blocks where the file has R-18's
    deeper.MODEL.WEIGHTS = three_class_weights
    with pytest.raises(CheckpointMismatchError, match=r"not in the file \(backbone.bottom_up.res2"):
        RetinaMaskPredictor(deeper)
    same = get_tiny_cfg(num_classes=3)
    same.MODEL.WEIGHTS = three_class_weights
    loaded = RetinaMaskPredictor(same).model.state_dict()
    saved = torch.load(three_class_weights, weights_only=True)["model"]
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())


def test_training_starts_from_another_class_count_with_one_line(three_class_weights, caplog):
    torch.manual_seed(1)
    model = build_model(get_tiny_cfg(num_classes=4))
    fresh = model.head.cls_score.weight.detach().clone()
    checkpointer = CheckedCheckpointer(model, fit="training")
    with caplog.at_level(logging.INFO, logger="fvcore.common.checkpoint"):
        checkpointer.load(three_class_weights)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert f"{three_class_weights}: a checkpoint of another class count" in "\n".join(lines)
    assert not any("Skip loading parameter" in line for line in lines)
    assert torch.equal(model.head.cls_score.weight, fresh)
    saved = torch.load(three_class_weights, weights_only=True)["model"]
    assert torch.equal(model.head.bbox_pred.weight, saved["head.bbox_pred.weight"])


def test_an_imagenet_backbone_starts_a_training_run(three_class_weights, tmp_path, caplog):
    saved = torch.load(three_class_weights, weights_only=True)["model"]
    backbone = {k: v for k, v in saved.items() if k.startswith("backbone.bottom_up.")}
    torch.save({"model": backbone}, tmp_path / "backbone.pth")
    model = build_model(get_tiny_cfg(num_classes=4))
    with caplog.at_level(logging.INFO, logger="fvcore.common.checkpoint"):
        CheckedCheckpointer(model, fit="training").load(str(tmp_path / "backbone.pth"))
    assert "everything but backbone.bottom_up starts fresh" in caplog.text
    with pytest.raises(CheckpointMismatchError):  # the demo, the predictor, the export
        CheckedCheckpointer(model, fit="inference").load(str(tmp_path / "backbone.pth"))


def test_weights_paths_that_cannot_load_are_named(tmp_path):
    model = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match=f"^{tmp_path}: is a folder"):
        CheckedCheckpointer(model).load(str(tmp_path))
    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'no.pth'}: no such file"):
        CheckedCheckpointer(model).load(str(tmp_path / "no.pth"))
    url = "http://127.0.0.1:9/model.pth"  # nothing listens on the discard port
    with pytest.raises(CheckpointError, match=f"^{url}: cannot be downloaded"):
        CheckedCheckpointer(model).load(url)
    cfg = get_tiny_cfg()
    for weights, message in [("", "MODEL.WEIGHTS is empty in c.yaml"), (str(tmp_path), "folder")]:
        cfg.MODEL.WEIGHTS = weights
        with pytest.raises(UsageError, match=message):
            require_weights(cfg, "c.yaml")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without GPU")
def test_a_cuda_config_runs_on_the_cpu_with_one_warning(caplog):
    cfg = get_tiny_cfg()
    cfg.MODEL.DEVICE = "cuda:0"
    with caplog.at_level(logging.WARNING, logger="retinamask_d2"):
        fall_back_to_cpu(cfg)
    assert cfg.MODEL.DEVICE == "cpu"
    assert [r.getMessage() for r in caplog.records] == [
        "MODEL.DEVICE is cuda:0 but no GPU is found: using the CPU"
    ]


def test_a_detectron2_retinanet_checkpoint_starts_retinamask_training(tmp_path, caplog):
    cfg = get_tiny_cfg()
    cfg.MODEL.RETINANET.NORM = ""  # detectron2 v0.6's own RetinaNet cannot build a GN head
    retinanet_cfg = cfg.clone()
    retinanet_cfg.MODEL.META_ARCHITECTURE = "RetinaNet"
    retinanet_cfg.MODEL.BACKBONE.NAME = "build_retinanet_resnet_fpn_backbone"
    DetectionCheckpointer(build_model(retinanet_cfg), str(tmp_path)).save("retinanet")
    path = str(tmp_path / "retinanet.pth")
    with caplog.at_level(logging.INFO, logger="fvcore.common.checkpoint"):
        CheckedCheckpointer(build_model(cfg), fit="training").load(path)
    assert f"{path}: a detectron2 RetinaNet checkpoint: the mask branch and P6 start fresh" in (
        caplog.text
    )
    with pytest.raises(CheckpointMismatchError, match=r"not in the file \(mask_branch.mask_head"):
        CheckedCheckpointer(build_model(cfg), fit="inference").load(path)


def test_the_export_falls_back_to_the_cpu_and_checks_the_weights(three_class_weights, tmp_path):
    from tests.common import INSTANT_CONFIG
    from tests.export_common import export_model

    opts = ["MODEL.WEIGHTS", three_class_weights, "MODEL.RETINANET.NUM_CLASSES", "4"]
    if not torch.cuda.is_available():  # without the fallback, building the model would fail
        opts += ["MODEL.DEVICE", "cuda"]
    argv = ["--config-file", str(INSTANT_CONFIG), "--output", str(tmp_path), "--opts", *opts]
    with pytest.raises(CheckpointMismatchError, match=f"^{three_class_weights} does not fit"):
        export_model.main(argv)
    assert list(tmp_path.iterdir()) == []
