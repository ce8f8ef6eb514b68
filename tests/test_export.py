"""The exported model (TorchScript, ONNX) gives the eager model's results on other image sizes."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.layers.mask_ops import paste_masks_in_image
from detectron2.modeling.roi_heads.mask_head import mask_rcnn_inference
from detectron2.structures import Instances
from PIL import Image

from retinamask_d2.export import (
    OUTPUT_NAMES,
    ExportableRetinaMask,
    describe,
    export_onnx,
    export_torchscript,
)
from retinamask_d2.modeling.mask_branch import RetinaMaskBranch
from tests.common import INSTANT_CONFIG, build_tiny_model
from tests.export_common import (
    CLASS_NAMES,
    OTHER_SHAPES,
    SAMPLE_SHAPE,
    assert_same_results,
    blank_image,
    detecting_cfg,
    detecting_model,
    eager_instances,
    export_model,
    random_image,
)


@pytest.fixture(scope="module")
def model():
    return detecting_model()


def test_test_images_are_what_they_claim(model):
    # The preconditions of the equality tests: detections (masks among them) on the random
    # images, none on the blank one.
    for i, shape in enumerate([SAMPLE_SHAPE, *OTHER_SHAPES]):
        instances = eager_instances(model, random_image(shape, i))
        assert len(instances) > 10 and instances.pred_masks.flatten(1).any(1).sum() > 5
    assert len(eager_instances(model, blank_image())) == 0


def test_traceable_paste_equals_detectron2():
    torch.manual_seed(0)
    probs = torch.rand(5, 1, 28, 28)
    # Boxes inside, across the borders, thin and sub-pixel.
    boxes = torch.tensor(
        [[3.2, 4.7, 40.1, 30.0], [-10, 50, 30, 90], [60, 2, 61.5, 70], [20, 20, 20.4, 20.3]]
        + [[75, 60, 85, 70]]
    )
    expected = paste_masks_in_image(probs[:, 0], boxes, (64, 80), threshold=0.5)
    assert torch.equal(RetinaMaskBranch.traceable_paste(probs, boxes, 64, 80), expected)
    assert expected[:3].flatten(1).any(1).all()  # the comparison is not between empty masks


@pytest.mark.parametrize("classes", [3, 1], ids=["class-specific", "class-agnostic"])
def test_traceable_mask_probabilities_equal_detectron2(classes):
    # Two images' detections (3 and 2, classes mixed): the same (N, 1, M, M) probabilities as
    # mask_rcnn_inference sets, bit for bit, split per image.
    torch.manual_seed(0)
    logits = torch.randn(5, classes, 28, 28) * 4
    detections = [Instances((64, 64)), Instances((64, 64))]
    detections[0].pred_classes = torch.tensor([2, 0, 2]) % classes
    detections[1].pred_classes = torch.tensor([1, 1]) % classes
    expected = [Instances((64, 64), pred_classes=d.pred_classes) for d in detections]
    mask_rcnn_inference(logits, expected)
    probs = RetinaMaskBranch.traceable_mask_probabilities(logits, detections)
    assert [p.shape for p in probs] == [(3, 1, 28, 28), (2, 1, 28, 28)]
    for p, e in zip(probs, expected, strict=True):
        assert torch.equal(p, e.pred_masks)
    (single,) = RetinaMaskBranch.traceable_mask_probabilities(logits[3:], detections[1:])
    mask_rcnn_inference(logits[3:], expected[1:])  # one image: no split
    assert torch.equal(single, expected[1].pred_masks)


def run_exported(format: str, path, image: torch.Tensor):
    if format == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path))(image)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": image.numpy()})


def export(format: str, model, sample: torch.Tensor, folder):
    path = folder / f"model.{format}"
    if format == "torchscript":
        export_torchscript(model, sample, path)
    else:
        pytest.importorskip("onnx")  # the export extra
        pytest.importorskip("onnxruntime")
        export_onnx(model, sample, path)
    return path


@pytest.mark.parametrize(
    "format,sample", [("torchscript", "random"), ("torchscript", "blank"), ("onnx", "random")]
)
def test_exported_model_equals_eager_on_other_sizes(model, format, sample, tmp_path):
    # Traced on one image (one with detections, or one without: both exporters trace, so the
    # second case is checked once), run on images of other sizes and aspect ratios, and on the
    # blank image with no detection.
    image = random_image(SAMPLE_SHAPE, 0) if sample == "random" else blank_image()
    path = export(format, model, image, tmp_path)
    images = [random_image(shape, i + 1) for i, shape in enumerate(OTHER_SHAPES)]
    for image in [*images, blank_image((72, 130))]:
        assert_same_results(run_exported(format, path, image), eager_instances(model, image))


@pytest.mark.parametrize(
    "topk,drop_unmasked", [(0, False), (5, True)], ids=["box-only", "masked-only"]
)
def test_exported_model_follows_mask_options(topk, drop_unmasked, tmp_path):
    # TEST_TOPK_MASKS 0 (no masks) and DROP_UNMASKED (only masked detections) are exported too.
    model = detecting_model()
    model.test_topk_masks, model.drop_unmasked = topk, drop_unmasked
    path = export("torchscript", model, random_image(SAMPLE_SHAPE, 0), tmp_path)
    image = random_image((80, 200), 1)
    outputs = run_exported("torchscript", path, image)
    assert len(outputs[3]) == topk  # none of the top 5 boxes is empty after clipping here
    assert len(outputs[0]) == topk if drop_unmasked else len(outputs[0]) > 10
    assert_same_results(outputs, eager_instances(model, image))


def test_wrapper_refuses_training_mode_and_mask_nms():
    with pytest.raises(ValueError, match="eval"):
        ExportableRetinaMask(build_tiny_model())
    model = detecting_model()
    model.mask_nms_thresh = 0.5
    with pytest.raises(ValueError, match="MASK_NMS.ENABLED"):
        ExportableRetinaMask(model)


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_cli_writes_model_and_description(format, tmp_path):
    if format == "onnx":
        pytest.importorskip("onnx")  # the export extra
        pytest.importorskip("onnxruntime")
    opts = ["MODEL.RETINAMASK.CLASS_NAMES", str(CLASS_NAMES), "MODEL.RETINANET.NUM_CLASSES", "3"]
    sample = []
    if format == "torchscript":  # traced on an image file; the ONNX export on random pixels
        Image.fromarray(random_image((50, 300), 9).numpy()).save(tmp_path / "sample.png")
        sample = ["--sample-image", str(tmp_path / "sample.png")]
    path = export_model.main(
        ["--config-file", str(INSTANT_CONFIG), "--format", format, "--output", str(tmp_path)]
        + sample
        + ["--opts", *opts]
    )
    info = json.loads((tmp_path / f"{path.name}.json").read_text())
    assert path.name == info["file"] and info["format"] == format
    assert info["class_names"] == CLASS_NAMES
    assert [o["name"] for o in info["outputs"]] == list(OUTPUT_NAMES)
    assert info["preprocessing_inside"]["pixel_std"] == [57.375, 57.120, 58.395]
    assert info["resize_before"] == {
        "shortest_edge": 128,
        "max_size": 128,
        "interpolation": "bilinear",
    }
    image = random_image((70, 110), 0)
    outputs = [np.asarray(o) for o in run_exported(format, path, image)]
    named: dict[str, set[int]] = {}
    for output, spec in zip(outputs, info["outputs"]):
        assert str(output.dtype) == spec["dtype"]
        assert len(output.shape) == len(spec["shape"])
        for size, name in zip(output.shape, spec["shape"]):
            if isinstance(name, str):
                named.setdefault(name, set()).add(size)
            else:
                assert size == name
    # Each named size is one number across the outputs: the image's, and one detection count.
    assert named["height"] == {70} and named["width"] == {110}
    assert len(named["detections"]) == 1


def test_cli_keeps_one_description_per_format_and_refuses_to_overwrite(tmp_path):
    # docs/export.md's two exports into one folder leave a description for each; a second export
    # over existing files stops before building the model (the config file is not even read),
    # naming the files, unless --overwrite.
    def run(format: str, *extra: str) -> Path:
        args = ["--config-file", str(tmp_path / "missing.yaml"), "--format", format]
        return export_model.main([*args, "--output", str(tmp_path / "out"), *extra])

    for name in ["model.ts", "model.ts.json", "model.onnx.json"]:
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / name).write_text("earlier export")
        with pytest.raises(ValueError, match=f"out/{name} already exists; pass --overwrite"):
            run("onnx" if "onnx" in name else "torchscript")
        (tmp_path / "out" / name).unlink()
    (tmp_path / "out" / "model.ts").write_text("earlier export")
    with pytest.raises(Exception, match="missing.yaml"):  # past the check: the config is read
        run("torchscript", "--overwrite")
    with pytest.raises(Exception, match="missing.yaml"):  # the other format's files are no bar
        run("onnx")


@pytest.mark.parametrize(
    "output,message",
    [
        ("a_file", "a_file is a file; give a folder"),
        ("a_file/sub", "a_file/sub is not a writable folder (Not a directory)"),
        ("/sys/retinamask_export", "is not a writable folder"),
    ],
)
def test_cli_names_output_problems_in_one_line(output, message, tmp_path):
    (tmp_path / "a_file").write_text("")
    argv = ["--config-file", "missing.yaml", "--output", str(tmp_path / output)]
    with pytest.raises(ValueError) as error:
        export_model.main(argv)
    assert "--output" in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_description_counts_no_masks_for_box_only_models():
    model = detecting_model()
    model.test_topk_masks = 0
    info = describe(detecting_cfg(), model, "onnx", "model.onnx")
    assert info["outputs"][3]["shape"] == [0, "height", "width"]
    settings = info["postprocessing_inside"]["settings"]
    assert settings["MODEL.RETINANET.SCORE_THRESH_TEST"] == pytest.approx(0.05)
    assert settings["MODEL.RETINAMASK.TEST_TOPK_MASKS"] == 0
    assert math.isclose(info["preprocessing_inside"]["pixel_mean"][0], 104.0)


def test_speed_table_comes_from_the_benchmark_json():
    from benchmarks import report

    timing = {"ms": 90.4, "median_ms": 120.0, "n": 3}
    matched = {"detections": 100, "matched_eager": 100, "max_box_diff_px": 1.5e-5}
    row = {
        "model": "R50-FPN",
        "input": [800, 1333],
        "eager_detections": 100,
        "eager_tied_scores": 7,
        "eager": timing,
        "torchscript": {**timing, **matched, "max_score_diff": 0.0},
        "onnxruntime": {**timing, "detections": 98, "matched_eager": 0},
    }
    table = report.export_markdown({"device": "CPU X", "onnxruntime": "1.0", "rows": [row]})
    assert "| R50-FPN | 800×1333 | 90 (120) | 90 (120) | 90 (120) |" in table
    assert "| 100 eager detections; 7 tied scores; TorchScript: 100 of 100 match (boxes" in table
    assert "within 2e-05 px, scores within 0); ONNX: 0 of 98 match |" in table
