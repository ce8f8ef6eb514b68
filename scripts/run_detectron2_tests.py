#!/usr/bin/env python
"""
Run detectron2's own unit tests against the detectron2 installed in this environment.

The tests come from a detectron2 source checkout given on the command line (the patched fallback
was checked with those of the official commit 72e9dd6, the commit of the pb1-detectron2==0.6
sdist). They are copied to a temporary folder first: run from the checkout, its own detectron2/
folder would shadow the installed package. Tests that cannot pass without the compiled extension,
the network, the COCO files or caffe2 are deselected, each with its reason below; the list and the
results are in third_party/detectron2/TESTS.md. Nothing is downloaded.

Usage: .venv/bin/python scripts/run_detectron2_tests.py PATH/TO/detectron2 [pytest arguments]
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

NEEDS_C_EXTENSION = "needs the compiled extension detectron2._C (rotated boxes, fast COCOeval)"
NEEDS_NETWORK = "downloads model-zoo weights or sample images"
NEEDS_COCO = "reads datasets/coco/annotations/instances_val2017_100.json"
NEEDS_CAFFE2 = "needs caffe2, which torch 2 no longer ships (and downloads model-zoo weights)"
NEEDS_BLACK = "compares LazyConfig.to_py with black's formatting; black is not installed"
VERTEX_ORDER = (
    "compares a cropped polygon's vertices in order; shapely 2 starts the ring at another vertex "
    "of the same polygon (official main compares up to rotation)"
)

C_EXTENSION_TESTS = [
    "data/test_coco_evaluation.py::TestCOCOeval::test_fast_eval",
    "layers/test_nms_rotated.py::TestNMSRotated::test_batched_nms_rotated_0_degree_cpu",
    "layers/test_nms_rotated.py::TestNMSRotated::test_nms_rotated_0_degree_cpu",
    "layers/test_nms_rotated.py::TestNMSRotated::test_nms_rotated_180_degrees_cpu",
    "layers/test_nms_rotated.py::TestNMSRotated::test_nms_rotated_90_degrees_cpu",
    "layers/test_nms_rotated.py::TestScriptable::test_scriptable_cpu",
    "layers/test_roi_align_rotated.py::ROIAlignRotatedTest::test_empty_box",
    "layers/test_roi_align_rotated.py::ROIAlignRotatedTest::test_forward_output_0_90_180_270",
    "layers/test_roi_align_rotated.py::ROIAlignRotatedTest::test_resize",
    "layers/test_roi_align_rotated.py::ROIAlignRotatedTest::test_roi_align_rotated_gradcheck_cpu",
    "modeling/test_roi_heads.py::ROIHeadsTest::test_rroi_heads",
    "modeling/test_roi_pooler.py::TestROIPooler::test_roialignv2_roialignrotated_match_cpu",
    "modeling/test_rpn.py::RPNTest::test_rrpn",
    "structures/test_rotated_boxes.py::TestRotatedBoxesLayer::test_iou_0_dim_cpu",
    "structures/test_rotated_boxes.py::TestRotatedBoxesLayer::test_iou_extreme",
    "structures/test_rotated_boxes.py::TestRotatedBoxesLayer::test_iou_half_overlap_cpu",
    "structures/test_rotated_boxes.py::TestRotatedBoxesLayer::test_iou_issue_2154",
    "structures/test_rotated_boxes.py::TestRotatedBoxesLayer::test_iou_issue_2167",
    "structures/test_rotated_boxes.py::TestRotatedBoxesLayer::test_iou_precision",
    "structures/test_rotated_boxes.py::TestRotatedBoxesStructure::test_pairwise_iou_0_degree",
    "structures/test_rotated_boxes.py::TestRotatedBoxesStructure::test_pairwise_iou_45_degrees",
    "structures/test_rotated_boxes.py::TestRotatedBoxesStructure::test_pairwise_iou_issue1207",
    "structures/test_rotated_boxes.py::TestRotatedBoxesStructure::"
    "test_pairwise_iou_issue1207_simplified",
    "structures/test_rotated_boxes.py::TestRotatedBoxesStructure::"
    "test_pairwise_iou_large_close_boxes",
    "structures/test_rotated_boxes.py::TestRotatedBoxesStructure::test_pairwise_iou_many_boxes",
    "structures/test_rotated_boxes.py::TestRotatedBoxesStructure::test_pairwise_iou_orthogonal",
]
NETWORK_TESTS = [
    "data/test_detection_utils.py::TestTransformAnnotations::test_opencv_exif_orientation",
    "data/test_detection_utils.py::TestTransformAnnotations::test_read_exif_orientation",
    "test_export_torchscript.py::TestScripting::testMaskRCNNC4",
    "test_export_torchscript.py::TestScripting::testMaskRCNNFPN",
    "test_export_torchscript.py::TestScripting::testRetinaNet",
    "test_export_torchscript.py::TestTracing::testMaskRCNNC4",
    "test_export_torchscript.py::TestTracing::testMaskRCNNFPN",
    "test_export_torchscript.py::TestTracing::testRetinaNet",
]
COCO_TESTS = [
    "data/test_coco_evaluation.py::TestCOCOeval::test_unknown_category",
    "data/test_dataset.py::TestDataLoader::test_build_dataloader_train",
    "data/test_dataset.py::TestDataLoader::test_build_iterable_dataloader_train",
    "test_engine.py::TestTrainer::test_default_trainer",
]
CAFFE2_TESTS = ["test_export_caffe2.py"]  # every test of the file
BLACK_TESTS = ["config/test_lazy_config.py::TestLazyPythonConfig::test_to_py"]
VERTEX_ORDER_TESTS = ["data/test_transforms.py::TestTransforms::test_resize_and_crop"]


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # the parent package does not import
        return False


def excluded_tests() -> dict[str, str]:
    """Test id (relative to the tests folder) -> why it is left out in this environment."""
    groups = [
        (NETWORK_TESTS, NEEDS_NETWORK),
        (COCO_TESTS, NEEDS_COCO),
        (VERTEX_ORDER_TESTS, VERTEX_ORDER),
    ]
    if not importable("detectron2._C"):
        groups.append((C_EXTENSION_TESTS, NEEDS_C_EXTENSION))
    if not importable("caffe2"):
        groups.append((CAFFE2_TESTS, NEEDS_CAFFE2))
    if not importable("black"):
        groups.append((BLACK_TESTS, NEEDS_BLACK))
    return {test: reason for tests, reason in groups for test in tests}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        return 2
    tests = Path(sys.argv[1]) / "tests"
    if not tests.is_dir():
        print(f"{tests} is not a folder: give the path of a detectron2 source checkout")
        return 2
    excluded = excluded_tests()
    for test, reason in excluded.items():
        print(f"deselected {test}: {reason}")
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    with tempfile.TemporaryDirectory(prefix="detectron2-tests-") as tmp:
        copy = Path(tmp) / "tests"
        shutil.copytree(tests, copy, ignore=shutil.ignore_patterns("__pycache__"))
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(copy)]
        cmd += [arg for test in excluded for arg in ("--deselect", test)]
        cmd += ["-rfEs", *sys.argv[2:], "."]
        return subprocess.run(cmd, cwd=copy, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
