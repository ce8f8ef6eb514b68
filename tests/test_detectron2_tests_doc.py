"""third_party/detectron2/TESTS.md names every detectron2 test that the runner script leaves out."""

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def load_runner():
    path = REPO / "scripts" / "run_detectron2_tests.py"
    spec = importlib.util.spec_from_file_location("run_detectron2_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_left_out_test_is_named_in_tests_md():
    runner = load_runner()
    doc = (REPO / "third_party" / "detectron2" / "TESTS.md").read_text()
    groups = [
        runner.C_EXTENSION_TESTS,
        runner.NETWORK_TESTS,
        runner.COCO_TESTS,
        runner.CAFFE2_TESTS,
        runner.BLACK_TESTS,
        runner.VERTEX_ORDER_TESTS,
    ]
    ids = [test for group in groups for test in group]
    assert len(ids) == len(set(ids))
    missing = [t for t in ids if t.split("::")[0] not in doc or t.split("::")[-1] not in doc]
    assert missing == []
