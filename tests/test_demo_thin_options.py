"""The demo's options for thin objects: --upright cut-outs and --class-agnostic NMS."""

import cv2
import numpy as np

from tests.common import demo, model_args, weights_args


def test_upright_needs_cutouts(model_dir, tmp_path, capsys):  # noqa: F811
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((64, 64, 3), np.uint8))
    argv = ["--input", str(tmp_path / "a.png"), "--output", str(tmp_path / "out"), "--upright"]
    assert demo.main(model_args(model_dir) + argv + weights_args(model_dir)) == 2
    assert "--upright turns the cut-outs" in capsys.readouterr().err


def test_class_agnostic_sets_the_model_key(model_dir):  # noqa: F811
    parser = demo.get_parser()
    base = model_args(model_dir) + ["--input", "x.png"]
    agnostic = demo.setup_cfg(
        parser.parse_args(base + ["--class-agnostic"] + weights_args(model_dir))
    )
    assert agnostic.MODEL.RETINAMASK.CLASS_AGNOSTIC_NMS
    assert not demo.setup_cfg(parser.parse_args(base + weights_args(model_dir))).MODEL.RETINAMASK[
        "CLASS_AGNOSTIC_NMS"
    ]


def test_upright_cutouts_are_what_make_cutouts_turns(model_dir, tmp_path, monkeypatch):  # noqa: F811
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "a.png"), rng.integers(0, 256, (64, 96, 3), dtype=np.uint8))
    made = []

    def spy(image, instances, metadata, upright=False):
        cutouts = demo.image_demo.make_cutouts.__wrapped__(
            image, instances, metadata, upright=upright
        )
        made.append((upright, cutouts))
        return cutouts

    spy.__wrapped__ = demo.image_demo.make_cutouts
    monkeypatch.setattr(demo.image_demo, "make_cutouts", spy)
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "a.png"), "--output", str(out), "--cutouts", "--upright"]
    assert demo.main(model_args(model_dir) + argv + weights_args(model_dir)) == 0
    ((upright, cutouts),) = made
    assert upright and cutouts  # the random tiny model's masks are not empty at threshold 0
    for cutout in cutouts:
        written = cv2.imread(str(out / "cutouts" / cutout.file_name("a")), cv2.IMREAD_UNCHANGED)
        assert written.shape == cutout.rgba.shape
