"""The snippets in docs/export.md run the exported files without detectron2 or this package."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from PIL import Image

from retinamask_d2.export import describe, export_onnx, export_torchscript
from tests.export_common import detecting_cfg, detecting_model, eager_instances, matching

README = Path(__file__).resolve().parents[1] / "docs" / "export.md"
# Runs the script named by argv[1] with the top-level modules named in argv[2] unimportable.
HIDING_RUNNER = """
import importlib.abc, runpy, sys

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in sys.argv[2].split(","):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)")

sys.meta_path.insert(0, Hide())
runpy.run_path(sys.argv[1], run_name="__main__")
"""
HIDDEN = {
    "torchscript": "detectron2,retinamask_d2",
    "onnx": "detectron2,retinamask_d2,torch,torchvision",
}
LINE = re.compile(r"^(\w+) ([0-9.]+) \[([^\]]*)\] (\d+|-)$")


def readme_snippet(name: str) -> str:
    """The python block that follows ``<!-- snippet:NAME -->`` in docs/export.md."""
    text = README.read_text(encoding="utf-8")
    _, marker, rest = text.partition(f"<!-- snippet:{name} -->")
    assert marker, f"{README} has no snippet {name}"
    match = re.match(r"\s*```python\n(.*?)\n```", rest, re.DOTALL)
    assert match, f"no python block after the {name} marker"
    return match.group(1) + "\n"


def run_hidden(script: Path, hidden: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HIDING_RUNNER, str(script), hidden],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )


def test_hiding_runner_hides(tmp_path):
    script = tmp_path / "imports.py"
    script.write_text("import detectron2\n")
    result = run_hidden(script, HIDDEN["torchscript"], tmp_path)
    assert result.returncode != 0 and "hidden by the test" in result.stderr


@pytest.mark.parametrize("format", ["torchscript", "onnx"])
def test_readme_snippet_runs_exported_file_without_the_package(format, tmp_path):
    if format == "onnx":
        pytest.importorskip("onnx")  # the export extra
        pytest.importorskip("onnxruntime")
    model = detecting_model()
    cfg = detecting_cfg()
    # An image of another size than the test size, which the snippet must resize as detectron2's
    # test-time ResizeShortestEdge does.
    pixels = np.random.default_rng(3).integers(0, 256, (150, 110, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    bgr = pixels[:, :, ::-1]
    resize = T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    resized = resize.get_transform(bgr).apply_image(bgr)
    sample = torch.from_numpy(np.array(resized))

    folder = tmp_path / "exported"
    folder.mkdir()
    file_name = "model.ts" if format == "torchscript" else "model.onnx"
    (export_torchscript if format == "torchscript" else export_onnx)(
        model, sample, folder / file_name
    )
    info = describe(cfg, model, format, file_name)
    (folder / f"{file_name}.json").write_text(json.dumps(info))  # as scripts/export_model.py
    script = tmp_path / "snippet.py"
    script.write_text(readme_snippet(f"export-{format}"))

    result = run_hidden(script, HIDDEN[format], tmp_path)
    assert result.returncode == 0, result.stderr

    expected = eager_instances(model, sample)
    lines = [LINE.match(line) for line in result.stdout.splitlines()]
    assert all(lines) and len(lines) == len(expected) > 10
    names = cfg.MODEL.RETINAMASK.CLASS_NAMES
    classes = [names.index(m.group(1)) for m in lines]
    scores = [float(m.group(2)) for m in lines]
    boxes = torch.tensor([[float(v) for v in m.group(3).split(",")] for m in lines])
    # Printed to 4 and 2 decimals: the tolerances are those of the equality tests plus rounding.
    order = matching(boxes, scores, classes, expected, box_tol=1e-3 + 5e-3, score_tol=1e-4 + 5e-5)
    areas = expected.pred_masks.flatten(1).sum(1)[order]
    masked = sum(m.group(4) != "-" for m in lines)
    assert 0 < masked <= model.test_topk_masks and not areas[masked:].any()
    for match, area in zip(lines[:masked], areas.tolist()):
        assert abs(int(match.group(4)) - area) <= max(1, 0.01 * area)
