"""Property: a valid COCO-format dataset, mutated (wrong types, NaN and infinities, huge and
negative numbers, missing keys, duplicates, wrong sizes, truncated files, images of 1xN, Nx1 or
a huge header), either trains a step or is refused with the project's own error naming the file;
never another exception, never the memory limit. And: weights saved under one config and loaded
under another either load exactly (same model) or are refused naming the file.

The cases run in one subprocess (tests/data_case_worker.py) under an address-space limit, so
that a mutation which makes a library allocate without bound fails the test instead of the
machine.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.coco_files import png_header_only
from tests.data_case_worker import RESULT_MARK

ROOT = Path(__file__).resolve().parents[1]
MEMORY_LIMIT_MB = 3000
H, W = 48, 64
IMAGES = ("a.png", "b.jpg", "c.png")

ODD_VALUES = st.one_of(
    st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e12, -1e12, -5, 0, 2**63]),
    st.sampled_from([None, True, "12", "", [], {}, [1, 2], {"a": 1}]),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
)


# (width, height) of "image_shape": 1 x N, N x 1, strips the resize leaves < 8 pixels wide, a
# header of 30000 x 30000, and the smallest sizes that train.
IMAGE_SHAPES = [(1, H), (W, 1), (1000, 9), (9, 1000), (30000, 30000), (8, 8)]


def _base() -> dict:
    """Three images, two categories, polygon and RLE masks: trains as it is."""
    square = [8.0, 8.0, 30.0, 8.0, 30.0, 30.0, 8.0, 30.0]
    rle = {"size": [H, W], "counts": [H * 10 + 5, 20, H * W - H * 10 - 25]}
    annotations = []
    for i, _ in enumerate(IMAGES, start=1):
        annotations.append(_annotation(2 * i, i, 1, [8, 8, 22, 22], [square]))
        annotations.append(_annotation(2 * i + 1, i, 7, [10, 5, 1, 20], rle))
    return {
        "images": [
            {"id": i, "file_name": name, "width": W, "height": H}
            for i, name in enumerate(IMAGES, start=1)
        ],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "square"}, {"id": 7, "name": "bar"}],
    }


def _annotation(ann_id, image_id, category_id, bbox, segmentation) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": bbox,
        "area": float(bbox[2] * bbox[3]),
        "iscrowd": 0,
        "segmentation": segmentation,
    }


def _write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in IMAGES:
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(folder / name)


# ---------------------------------------------------------------------------------------------
# Mutations: each takes (data, the json, the image folder) and changes one thing.


@st.composite
def mutations(draw):
    kind = draw(
        st.sampled_from(
            [
                "annotation_value",
                "bbox_value",
                "polygon_value",
                "polygon_length",
                "rle_counts",
                "image_value",
                "category_value",
                "delete_key",
                "duplicate",
                "top_level",
                "image_file",
                "image_kind",
                "all_crowd",
                "image_shape",
            ]
        )
    )
    return kind, draw(st.integers(0, 5)), draw(ODD_VALUES), draw(st.floats(0.0, 1.0))


def _apply(mutation, data: dict, images: Path) -> None:
    kind, index, value, fraction = mutation
    anns, imgs = data["annotations"], data["images"]
    ann = anns[index % len(anns)]
    if kind == "annotation_value":
        key = ["id", "image_id", "category_id", "iscrowd", "area", "segmentation"][index]
        ann[key] = value
    elif kind == "bbox_value":
        ann["bbox"][index % 4] = value
    elif kind == "polygon_value":
        polygon = anns[0]["segmentation"][0]
        polygon[index % len(polygon)] = value
    elif kind == "polygon_length":
        polygon = anns[0]["segmentation"][0]
        del polygon[int(fraction * len(polygon)) :]
    elif kind == "rle_counts":
        rle = anns[1]["segmentation"]
        if index % 2:
            rle["counts"][index % 3] = value
        else:
            rle["counts"] = "".join(chr(48 + int(fraction * 80) % 80) for _ in range(index + 1))
    elif kind == "image_value":
        key = ["id", "file_name", "width", "height", "width", "height"][index]
        imgs[index % len(imgs)][key] = value
    elif kind == "category_value":
        data["categories"][index % 2][["id", "name"][index % 2]] = value
    elif kind == "delete_key":
        entry = [ann, imgs[index % 3], data["categories"][index % 2]][index % 3]
        if entry:
            del entry[sorted(entry)[int(fraction * len(entry)) % len(entry)]]
    elif kind == "duplicate":
        target = anns if index % 2 else imgs
        target.append(copy.deepcopy(target[index % len(target)]))
    elif kind == "top_level":
        data[["images", "annotations", "categories"][index % 3]] = value
    elif kind == "image_file":
        path = images / IMAGES[index % 3]
        content = path.read_bytes()
        if index < 3:
            path.write_bytes(content[: int(fraction * len(content))])
        else:
            size = (max(1, int(W * (0.5 + fraction))), H)
            Image.new("RGB", size, (1, 2, 3)).save(path, format=_format(path))
    elif kind == "image_kind":
        path = images / IMAGES[index % 3]
        if index == 0:
            path.unlink()
        elif index == 1:
            path.write_text("not an image")
        elif index == 2:  # 16-bit grayscale (PNG) or 8-bit grayscale (JPEG)
            gray = np.full((H, W), int(fraction * 65535), np.uint16)
            image = Image.fromarray(gray) if path.suffix == ".png" else Image.new("L", (W, H))
            image.save(path, format=_format(path))
        elif index == 3:  # EXIF-rotated: shown H x W, while the json says W x H
            exif = Image.Exif()
            exif[0x0112] = 6 + int(fraction * 2)
            Image.new("RGB", (W, H)).save(path, format=_format(path), exif=exif.tobytes())
        elif index == 4:
            Image.new("RGBA", (W, H), (5, 6, 7, int(fraction * 255))).save(path, format="PNG")
        else:
            path.write_bytes(b"")
    elif kind == "all_crowd":
        for a in anns:
            a["iscrowd"] = 1
    elif kind == "image_shape":
        image = imgs[index % 3]
        path = images / IMAGES[index % 3]
        width, height = IMAGE_SHAPES[index]
        if width * height > 10**7:  # the header says so; the file holds a few bytes
            png_header_only(path, width, height)
        else:
            Image.new("RGB", (width, height), (9, 8, 7)).save(path, format=_format(path))
        if fraction < 0.8:  # mostly the json agrees (and the image's annotations go), so that
            image["width"], image["height"] = width, height  # the size limits are what refuses
            anns[:] = [a for a in anns if a.get("image_id") != image.get("id")]


def _format(path: Path) -> str:
    return {".png": "PNG", ".jpg": "JPEG"}[path.suffix]


# ---------------------------------------------------------------------------------------------


class Worker:
    """The subprocess that runs cases; started again if a case kills it."""

    def __init__(self):
        self.process = None

    def run(self, case: dict) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.data_case_worker", str(MEMORY_LIMIT_MB)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )
        self.process.stdin.write(json.dumps(case) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(RESULT_MARK):
                return json.loads(line[len(RESULT_MARK) :])
        code = self.process.wait()
        self.process = None
        return {"outcome": "died", "type": f"exit code {code}", "message": ""}

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


@pytest.fixture(scope="module")
def case_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cases")


def test_the_unmutated_dataset_trains(worker, case_root):
    assert _run(worker, case_root / "base", [])["outcome"] == "trained"


@settings(
    max_examples=int(os.environ.get("RETINAMASK_PROPERTY_EXAMPLES", "24")),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(mutations(), min_size=1, max_size=3))
def test_mutated_datasets_train_or_are_refused_naming_the_file(worker, case_root, changes):
    folder = case_root / f"case{len(list(case_root.iterdir()))}"
    result = _run(worker, folder, changes)
    assert result["outcome"] in ("trained", "refused"), (changes, result)
    if result["outcome"] == "refused":
        names = [str(folder / "train.json"), str(folder / "images")]
        assert any(name in result["message"] for name in names), (changes, result)


def _run(worker: Worker, folder: Path, changes: list) -> dict:
    if folder.exists():
        shutil.rmtree(folder)
    _write_images(folder / "images")
    data = _base()
    for change in changes:
        try:
            _apply(change, data, folder / "images")
        except (KeyError, IndexError, TypeError, AttributeError, ZeroDivisionError, OSError):
            pass  # an earlier change removed what this one changes
    (folder / "train.json").write_text(json.dumps(data))
    case = {
        "json": str(folder / "train.json"),
        "images": str(folder / "images"),
        "output": str(folder / "out"),
    }
    return worker.run(case)


# ---------------------------------------------------------------------------------------------
# Weights saved under one config, loaded under another.

CONFIG_CHOICES = {
    "MODEL.RETINANET.NUM_CLASSES": [2, 3],
    "MODEL.RESNETS.NORM": ["GN", "BN"],  # BN adds running statistics: other keys
    "MODEL.FPN.OUT_CHANNELS": [32, 64],
    "MODEL.ROI_MASK_HEAD.CONV_DIM": [16, 32],
}
CONFIGS = st.fixed_dictionaries({k: st.sampled_from(v) for k, v in CONFIG_CHOICES.items()})


def _tiny_cfg(options: dict):
    from tests.common import get_tiny_cfg

    cfg = get_tiny_cfg()
    cfg.merge_from_list([x for kv in options.items() for x in kv])
    return cfg


@settings(
    max_examples=int(os.environ.get("RETINAMASK_PROPERTY_EXAMPLES", "24")) // 3,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(saved=CONFIGS, loaded=CONFIGS)
def test_weights_of_another_config_load_exactly_or_are_refused(tmp_path, saved, loaded):
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    from retinamask_d2.checkpoint.checked import CheckedCheckpointer
    from retinamask_d2.checkpoint.errors import CheckpointMismatchError
    from retinamask_d2.predictor import RetinaMaskPredictor

    torch.manual_seed(0)
    DetectionCheckpointer(build_model(_tiny_cfg(saved)), str(tmp_path)).save("saved")
    path = str(tmp_path / "saved.pth")
    cfg = _tiny_cfg(loaded)
    cfg.MODEL.WEIGHTS = path
    if saved == loaded:
        state = RetinaMaskPredictor(cfg).model.state_dict()
        for key, value in torch.load(path, weights_only=True)["model"].items():
            assert torch.equal(state[key], value), key
    else:
        with pytest.raises(CheckpointMismatchError, match=f"^{path} does not fit the model"):
            RetinaMaskPredictor(cfg)
    # A training run may start from another class count only (the class layers start fresh).
    other_classes_only = [k for k in saved if saved[k] != loaded[k]] == [
        "MODEL.RETINANET.NUM_CLASSES"
    ]
    checkpointer = CheckedCheckpointer(build_model(cfg), fit="training")
    if saved == loaded or other_classes_only:
        checkpointer.load(path)
    else:
        with pytest.raises(CheckpointMismatchError, match=f"^{path} does not fit the model"):
            checkpointer.load(path)
