"""demo/demo.py run in-process through main(argv) on a tiny RetinaMask and images made here."""

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
from PIL import Image
from pycocotools.coco import COCO

from tests.common import DEMO_PATH, demo, model_args, noise_image, weights_args


def _good_images(folder: Path) -> dict[str, tuple[int, int]]:
    """Five readable images of different kinds; name -> (height, width)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise_image(64, 80, 1)).save(folder / "colour.png")
    Image.fromarray(noise_image(72, 56, 2)).save(folder / "photo.jpg")
    Image.fromarray(noise_image(48, 64, 3)[..., 0]).save(folder / "gray.png")
    rgba = np.concatenate([noise_image(60, 60, 4), np.full((60, 60, 1), 200, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(folder / "alpha.png")
    cv2.imwrite(str(folder / "deep.png"), noise_image(50, 70, 5)[..., 0].astype(np.uint16) * 257)
    return {
        "alpha.png": (60, 60),
        "colour.png": (64, 80),
        "deep.png": (50, 70),
        "gray.png": (48, 64),
        "photo.jpg": (72, 56),
    }


def _bad_images(folder: Path) -> None:
    (folder / "fake.jpg").write_text("this is text")
    whole = (folder / "colour.png").read_bytes()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "notes.txt").write_text("not an image, and not named like one")


def _assert_drawing_of(path: Path, height: int, width: int) -> None:
    """A drawing is the image enlarged by a whole factor to a long side of at least 512."""
    drawn_width, drawn_height = Image.open(path).size
    factor = drawn_width // width
    assert (drawn_width, drawn_height) == (width * factor, height * factor)
    assert max(drawn_width, drawn_height) >= 512 and factor >= 1


def _cutouts_by_image(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.png")):
        found.setdefault(path.name.split("_")[0], []).append(path)
    return found


def test_folder_with_bad_files_gives_every_output_for_the_good_ones(model_dir, tmp_path, capsys):
    sizes = _good_images(tmp_path / "in")
    _bad_images(tmp_path / "in")
    out = tmp_path / "out"
    argv = ["--input", str(tmp_path / "in"), "--output", str(out), "--json", "--cutouts"]

    code = demo.main(model_args(model_dir) + argv + ["--batch-size", "2"] + weights_args(model_dir))

    captured = capsys.readouterr()
    assert code == 1  # two inputs failed
    assert f"{tmp_path / 'in' / 'fake.jpg'}: not an image file" in captured.err
    assert f"{tmp_path / 'in' / 'truncated.png'}: truncated or corrupt image data" in captured.err
    assert "ignored 1 file(s) without an image suffix" in captured.err  # notes.txt
    assert "5 of 7 image(s) done" in captured.out and "2 problem(s)" in captured.out

    for name, size in sizes.items():  # a drawing per good image, at the image's size
        _assert_drawing_of(out / name, *size)
    assert not (out / "fake.jpg").exists() and not (out / "truncated.png").exists()

    # COCO results: loadable against a ground truth listing the images by id in sorted order
    names = sorted([*sizes, "fake.jpg", "truncated.png"])
    gt = COCO()
    gt.dataset = {
        "images": [
            {
                "id": i,
                "file_name": n,
                "height": sizes.get(n, (1, 1))[0],
                "width": sizes.get(n, (1, 1))[1],
            }
            for i, n in enumerate(names, start=1)
        ],
        "annotations": [],
        "categories": [
            {"id": i, "name": n} for i, n in [(1, "person"), (2, "bicycle"), (3, "car")]
        ],
    }
    gt.createIndex()
    results = json.loads((out / "results.json").read_text())
    dt = gt.loadRes(str(out / "results.json"))
    assert len(dt.getAnnIds()) == len(results)
    # At most 5 detections per image; fewer where a random box lies in a batch's padding.
    per_image = Counter(r["file_name"] for r in results)
    assert set(per_image.values()) <= {3, 4, 5} and sum(per_image.values()) >= 20
    assert {r["file_name"] for r in results} == set(sizes)
    assert {r["image_id"] for r in results} == {names.index(n) + 1 for n in sizes}
    assert {r["category_id"] for r in results} <= {1, 2, 3}  # COCO's ids, not 0-based classes

    # cut-outs: one per non-empty mask, its alpha is the mask inside the mask's bounding box
    cutouts = _cutouts_by_image(out / "cutouts")
    for name in sizes:
        stem = Path(name).stem
        own = [r for r in results if r["file_name"] == name]
        non_empty = [r for r in own if mask_util.area(r["segmentation"]) > 0]
        assert len(cutouts.get(stem, [])) == len(non_empty)
        for path in cutouts.get(stem, []):
            _, index, class_name, score = path.stem.split("_")
            result = own[int(index)]
            assert class_name == ["person", "bicycle", "car"][result["category_id"] - 1]
            assert float(score) == pytest.approx(result["score"], abs=5e-4)
            mask = mask_util.decode(result["segmentation"]).astype(bool)
            ys, xs = np.nonzero(mask)
            rgba = np.asarray(Image.open(path))
            assert rgba.shape == (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1, 4)
            crop = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            np.testing.assert_array_equal(rgba[..., 3], crop * 255)


def test_existing_outputs_are_kept_unless_overwrite(model_dir, tmp_path, capsys):
    _good_images(tmp_path / "all")
    (tmp_path / "in").mkdir()
    for name in ("gray.png", "photo.jpg"):
        (tmp_path / "all" / name).rename(tmp_path / "in" / name)
    out = tmp_path / "out"
    argv = model_args(model_dir) + ["--input", str(tmp_path / "in"), "--output", str(out)]
    assert demo.main(argv + ["--cutouts"] + weights_args(model_dir)) == 0
    stale = out / "cutouts" / "gray_099_person_0.999.png"  # as if from an older run
    stale.write_bytes(b"old")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()

    assert demo.main(argv + ["--cutouts"] + weights_args(model_dir)) == 1
    err = capsys.readouterr().err
    assert err.count("exists already; pass --overwrite") == 2
    assert f"output {out / 'photo.jpg'} exists already" in err
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()}
    assert after == before  # nothing touched

    (out / "results.json").write_text("[]")
    assert demo.main(argv + ["--json"] + weights_args(model_dir)) == 2  # stops before any work
    assert f"{out / 'results.json'} exists already" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "[]"

    assert demo.main(argv + ["--cutouts", "--overwrite"] + weights_args(model_dir)) == 0
    assert not stale.exists()  # the cut-outs of a replaced image are all from this run
    assert (out / "photo.jpg").stat().st_mtime_ns > before[out / "photo.jpg"][1]


def test_inputs_from_several_folders_and_globs_keep_apart(model_dir, tmp_path, capsys):
    for sub in ("a", "b"):
        Image.fromarray(noise_image(40, 40, 6)).save(tmp_path / "in" / sub / "same.png") if (
            tmp_path / "in" / sub
        ).mkdir(parents=True) is None else None
    Image.fromarray(noise_image(40, 40, 7)).save(tmp_path / "in" / "a" / "same.jpg")
    out = tmp_path / "out"
    pattern = str(tmp_path / "in" / "**" / "same.*")
    argv = ["--input", pattern, str(tmp_path / "in" / "a" / "same.png"), "--output", str(out)]

    assert demo.main(model_args(model_dir) + argv + ["--cutouts"] + weights_args(model_dir)) == 0

    assert "3 of 3 image(s) done" in capsys.readouterr().out  # the repeated file counts once
    assert {p.relative_to(out).as_posix() for p in out.glob("[ab]/*")} == {
        "a/same.png",
        "a/same.jpg",
        "b/same.png",
    }
    prefixes = {p.name.split("_0")[0] for p in (out / "cutouts").rglob("*.png")}
    assert prefixes <= {"same_png", "same_jpg", "same"}  # a/same.png and a/same.jpg differ


def test_output_file_for_one_image(model_dir, tmp_path):
    _good_images(tmp_path / "in")
    image = str(tmp_path / "in" / "photo.jpg")
    args = model_args(model_dir) + ["--input", image, "--output", str(tmp_path / "seen.png")]
    assert demo.main(args + ["--json"] + weights_args(model_dir)) == 0
    _assert_drawing_of(tmp_path / "seen.png", 72, 56)
    assert json.loads((tmp_path / "seen.json").read_text())[0]["file_name"] == "photo.jpg"


@pytest.mark.parametrize(
    "inputs, output, message",
    [
        (["in/photo.jpg", "in/gray.png"], "seen.png", "is a file name but 2 images were given"),
        (["in"], "in", "would replace the input"),
        (["empty"], "out", "folder .*empty has no image files"),
        (["missing.jpg"], "out", "missing.jpg: no such file or folder"),
        (["in/*.gif"], "out", r"pattern .*\*\.gif has no image files"),
        (["in/gray.png", "--json", "empty"], "out", "--json .*empty is a folder"),
    ],
    ids=["file-output-many", "output-is-input", "empty-folder", "missing", "glob-none", "json-dir"],
)
def test_runs_that_cannot_start_exit_2(model_dir, tmp_path, capsys, inputs, output, message):
    _good_images(tmp_path / "in")
    (tmp_path / "empty").mkdir()
    inputs = [i if i.startswith("--") else str(tmp_path / i) for i in inputs]
    argv = ["--input", *inputs, "--output", str(tmp_path / output)]
    assert demo.main(model_args(model_dir) + argv + weights_args(model_dir)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err)
    assert list(tmp_path.glob("out*")) == [] and not (tmp_path / "seen.png").exists()


def test_too_large_images_are_refused_per_file(model_dir, tmp_path, capsys):
    _good_images(tmp_path / "in")
    argv = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out")]
    argv += ["--max-megapixels", "0.0035"]  # 3500 pixels: deep.png (50 x 70) is not over it
    assert demo.main(model_args(model_dir) + argv + weights_args(model_dir)) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'in' / 'photo.jpg'}: 56x72 (0.00403 MP) is over the limit of 0.0035" in err
    assert err.count("over the limit of 0.0035 megapixels") == 3  # alpha, colour, photo
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["deep.png", "gray.png"]


def test_without_a_config_it_uses_the_quickstart_model(model_dir, tmp_path, monkeypatch, capsys):
    _good_images(tmp_path / "in")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "QUICKSTART_DIR", model_dir)
    assert demo.main(["--input", "in/gray.png", "--confidence-threshold", "0"]) == 0
    _assert_drawing_of(tmp_path / "output" / "demo" / "gray.png", 48, 64)

    monkeypatch.setattr(demo, "QUICKSTART_DIR", tmp_path / "no_quickstart")
    assert demo.main(["--input", "in/gray.png"]) == 2
    err = capsys.readouterr().err
    assert "make quickstart" in err and "--config-file" in err and "MODEL.WEIGHTS" in err


def test_model_problems_say_what_to_pass(model_dir, tmp_path, capsys):
    _good_images(tmp_path / "in")
    argv = model_args(model_dir) + ["--input", str(tmp_path / "in" / "gray.png")]
    assert demo.main(argv) == 2  # the dumped config names no weights
    err = capsys.readouterr().err
    assert "MODEL.WEIGHTS is empty" in err and str(model_dir / "model_final.pth") in err
    assert demo.main(argv + ["--opts", "MODEL.WEIGHTS", str(tmp_path / "nope.pth")]) == 2
    assert f"MODEL.WEIGHTS {tmp_path / 'nope.pth'}: no such file" in capsys.readouterr().err
    assert demo.main(argv + weights_args(model_dir) + ["MODEL.NO_SUCH_KEY", "1"]) == 2
    assert "bad config in" in capsys.readouterr().err
    assert demo.main(["--config-file", "missing.yaml", "--input", "x.jpg"]) == 2
    assert "--config-file missing.yaml: no such file" in capsys.readouterr().err
    (tmp_path / "broken.yaml").write_text("MODEL: [unclosed\n")
    assert demo.main(["--config-file", str(tmp_path / "broken.yaml"), "--input", "x.jpg"]) == 2
    assert f"bad config in {tmp_path / 'broken.yaml'}" in capsys.readouterr().err


def test_video_frames_are_drawn_into_a_video(model_dir, tmp_path, capsys):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for seed in range(3):
        writer.write(noise_image(48, 64, seed))
    writer.release()
    argv = model_args(model_dir) + ["--video-input", str(video), "--output", str(tmp_path)]

    assert demo.main(argv + weights_args(model_dir)) == 0

    capture = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    capture.release()
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)
    assert demo.main(argv + weights_args(model_dir)) == 1  # the video exists now
    assert "clip.mp4 exists already" in capsys.readouterr().err


def test_stream_problems(model_dir, tmp_path, monkeypatch, capsys):
    argv = model_args(model_dir) + weights_args(model_dir)
    (tmp_path / "not_a_video.mp4").write_text("text")
    bad = ["--video-input", str(tmp_path / "not_a_video.mp4"), "--output", str(tmp_path / "o")]
    assert demo.main(bad[:2] + ["--output", str(tmp_path / "o.mkv")] + argv) == 2
    assert demo.main(bad + argv) == 1
    assert "cannot be opened as a video" in capsys.readouterr().err
    assert demo.main(bad + ["--json"] + argv) == 2
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        assert demo.main(["--webcam"] + argv) == 2
        assert "no display" in capsys.readouterr().err


def test_runs_as_a_script():
    """The file itself, as users start it: imports resolve and the exit code comes through."""
    done = subprocess.run(
        [sys.executable, str(DEMO_PATH), "--config-file", "missing.yaml", "--input", "x.jpg"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "error: --config-file missing.yaml: no such file" in done.stderr
