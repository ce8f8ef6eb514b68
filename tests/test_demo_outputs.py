"""The demo's outputs never replace an input or one another, are laid out relative to the
inputs' common folder, and the predictor takes PIL images."""

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from PIL import Image

from retinamask_d2.predictor import RetinaMaskPredictor, load_config
from tests.common import (
    DEMO_PATH,
    build_tiny_model,
    demo,
    get_tiny_cfg,
    load_script,
    model_args,
    noise_image,
    weights_args,
)

plan_outputs = load_script(DEMO_PATH.parent / "plan_outputs.py", "plan_outputs")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """config.yaml and model_final.pth of a tiny RetinaMask with random weights."""
    torch.manual_seed(0)
    cfg = get_tiny_cfg(num_classes=3)
    cfg.TEST.DETECTIONS_PER_IMAGE = 5
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 64, 96
    folder = tmp_path_factory.mktemp("model")
    DetectionCheckpointer(build_tiny_model(cfg), save_dir=str(folder)).save("model_final")
    (folder / "config.yaml").write_text(cfg.dump())
    return folder


def _run(model_dir, *args: str) -> int:
    return demo.main(model_args(model_dir) + list(args) + weights_args(model_dir))


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_inputs_whose_drawings_would_share_a_name_get_distinct_ones(
    model_dir, tmp_path, capsys, overwrite
):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(noise_image(40, 40, 1)).save(folder / "a.gif")  # drawn as a.gif.png
    Image.fromarray(noise_image(40, 48, 2)).save(folder / "a.gif.png")
    out = tmp_path / "out"
    assert _run(model_dir, "--input", str(folder), "--output", str(out), *overwrite) == 0
    assert "2 of 2 image(s) done" in capsys.readouterr().out
    drawings = sorted(p.name for p in out.iterdir())
    assert drawings == ["a.gif.png", "a.gif_2.png"]
    assert len({Image.open(out / name).size for name in drawings}) == 2  # of the two inputs


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_json_and_cutouts_never_replace_an_input(model_dir, tmp_path, capsys, overwrite):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(noise_image(40, 40, 1)).save(folder / "x.png")
    Image.fromarray(noise_image(40, 40, 2)).save(folder / "y.png")
    before = (folder / "y.png").read_bytes()
    inputs = ["--input", str(folder / "x.png"), str(folder / "y.png")]
    args = [*inputs, "--output", str(tmp_path)]
    assert _run(model_dir, *args, "--json", str(folder / "y.png"), *overwrite) == 2
    assert f"--json {folder / 'y.png'} is an input image" in capsys.readouterr().err
    # An input named like a cut-out of x.png in the --cutouts folder: it would be written over
    # (or, with --overwrite, removed as a stale cut-out).
    Image.fromarray(noise_image(40, 40, 3)).save(folder / "x_000_class0_0.900.png")
    inputs.append(str(folder / "x_000_class0_0.900.png"))
    args = [*inputs, "--output", str(tmp_path), "--cutouts", str(folder)]
    assert _run(model_dir, *args, *overwrite) == 2
    assert "would be named like the input" in capsys.readouterr().err
    assert (folder / "y.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["x.png", "x_000_class0_0.900.png", "y.png"]


def test_inputs_without_a_common_folder_are_named_by_their_last_folders():
    names = plan_outputs.relative_names([Path("/tmp/q/val/x.png"), Path("/var/q/train/y.png")])
    assert names == ["val/x.png", "train/y.png"]
    names = plan_outputs.relative_names([Path("/tmp/a/val/x.png"), Path("/var/b/val/x.png")])
    assert names == ["a/val/x.png", "b/val/x.png"]
    assert plan_outputs.relative_names([Path("/tmp/d/a/x.png"), Path("/tmp/d/b/y.png")]) == [
        "a/x.png",
        "b/y.png",
    ]


def test_predict_takes_pil_images_like_arrays_and_files(model_dir, tmp_path):
    cfg = load_config(model_dir / "config.yaml", model_dir / "model_final.pth")
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    predictor = RetinaMaskPredictor(cfg)
    rgb = noise_image(64, 80, 9)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    from_pil = predictor.predict(Image.open(tmp_path / "p.png"))
    from_array = predictor.predict(rgb, format="RGB")
    from_file = predictor.predict(tmp_path / "p.png")
    assert len(from_pil) > 0
    for other in (from_array, from_file):
        assert np.array_equal(from_pil.scores.numpy(), other.scores.numpy())
        assert np.array_equal(from_pil.pred_boxes.tensor.numpy(), other.pred_boxes.tensor.numpy())
