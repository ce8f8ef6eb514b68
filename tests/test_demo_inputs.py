"""The demo never replaces a file the run reads (the config, the weights, an input) nor turns a
file of another type into JSON, with or without --overwrite; inputs it cannot list or use are
named in the summary and the others still processed."""

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tests.common import demo, model_args, noise_image, weights_args


def _image(path: Path, height: int = 40, width: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise_image(height, width, 1)).save(path)
    return path


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_json_never_replaces_the_config_the_weights_or_another_file_type(
    model_dir, tmp_path, capsys, overwrite
):
    copied = tmp_path / "model"
    shutil.copytree(model_dir, copied)
    image = _image(tmp_path / "in" / "x.png")
    other = _image(tmp_path / "elsewhere.png")  # an image, but not an input of this run
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    before = {p: p.read_bytes() for p in (copied / "config.yaml", copied / "model_final.pth")}
    cases = [
        (copied / "config.yaml", "is the config, which this run reads"),
        (copied / "model_final.pth", "is the weights, which this run reads"),
        (other, "an image file name; name a .json file"),
        (notes, "exists and is not a .json file"),
    ]
    for target, message in cases:
        argv = model_args(copied) + ["--input", str(image), "--output", str(tmp_path / "out")]
        argv += ["--json", str(target), *overwrite] + weights_args(copied)
        assert demo.main(argv) == 2, target
        assert message in capsys.readouterr().err
    assert {p: p.read_bytes() for p in before} == before
    assert notes.read_text() == "mine" and Image.open(other).size == (48, 40)
    assert not (tmp_path / "out").exists()


def test_images_outside_the_size_limits_are_skipped_and_named(model_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    _image(folder / "good.png")
    Image.new("RGB", (1000, 9)).save(folder / "strip.png")  # 96x1 at the model's test size
    argv = model_args(model_dir) + ["--input", str(folder), "--output", str(tmp_path / "out")]
    assert demo.main(argv + weights_args(model_dir)) == 1
    captured = capsys.readouterr()
    assert f"error: {folder / 'strip.png'}: 1000x9 is resized to 96x1" in captured.err
    assert "1 of 2 image(s) done" in captured.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png"]


@pytest.mark.skipif(os.name != "posix", reason="symbolic links and permissions")
def test_inputs_that_cannot_be_listed_are_named_in_the_summary(model_dir, tmp_path, capsys):
    folder = tmp_path / "in"
    _image(folder / "good.png")
    os.symlink(folder / "loop.png", folder / "loop.png")  # a link to itself
    os.symlink(tmp_path / "gone.png", folder / "dangling.jpg")
    os.symlink(tmp_path / "self_loop", tmp_path / "self_loop")
    locked = tmp_path / "locked"
    _image(locked / "hidden.png")
    locked.chmod(0)
    permissions_apply = not os.access(locked, os.R_OK)  # not for root
    inputs = [str(folder), str(tmp_path / "self_loop")] + ([str(locked)] * permissions_apply)
    argv = model_args(model_dir) + ["--input", *inputs, "--output", str(tmp_path / "out")]
    try:
        assert demo.main(argv + weights_args(model_dir)) == 1
    finally:
        locked.chmod(0o755)
    out = capsys.readouterr().out
    problems = out[out.index("problems:") :]
    assert f"{folder / 'loop.png'}: a symbolic link that does not resolve" in problems
    assert f"{folder / 'dangling.jpg'}: a symbolic link that does not resolve" in problems
    assert f"{tmp_path / 'self_loop'}: a symbolic link that does not resolve" in problems
    if permissions_apply:
        assert f"folder {locked}: cannot be listed (Permission denied)" in problems
    assert "1 of 1 image(s) done" in out
