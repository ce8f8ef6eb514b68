"""train_net.py: problems with the command line, the config, the data or a checkpoint print
one "error:" line and exit with code 2; other errors keep their traceback."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.logger import setup_logger

import train_net
from tests.coco_files import ann, write_coco_json
from tests.common import get_tiny_cfg

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_command_line_datasets():
    """Each run registers --train-json / --test-json under the same names and sets up logging
    to the (captured) console, as a new process would: both are undone after each test."""
    yield
    setup_logger.cache_clear()
    for logger_name in ("detectron2", "retinamask_d2", "fvcore"):
        logging.getLogger(logger_name).handlers.clear()
    for name in train_net.CLI_DATASET_NAMES.values():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def _config(tmp_path, **opts) -> str:
    cfg = get_tiny_cfg(num_classes=4)
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = (), ()
    cfg.OUTPUT_DIR = str(tmp_path / "out")
    cfg.merge_from_list([x for kv in opts.items() for x in kv])
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.dump())
    return str(path)


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as stopped:
        train_net.main(train_net.argument_parser().parse_args(argv))
    return stopped.value.code


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_config_errors(tmp_path, capsys):
    config = _config(tmp_path)
    assert _main(["--config-file", str(tmp_path / "nope.yaml")]) == 2
    assert _one_error_line(capsys) == f"error: --config-file {tmp_path / 'nope.yaml'}: no such file"
    assert _main(["--config-file", config, "MODEL.NOPE", "1"]) == 2
    assert "bad config in " in _one_error_line(capsys)
    assert _main(["--config-file", config, "--train-json", "x.json"]) == 2
    assert "--train-json and --train-images must be given together" in _one_error_line(capsys)
    assert _main(["--config-file", config, "--eval-only"]) == 2
    assert "empty MODEL.WEIGHTS would evaluate an untrained model" in _one_error_line(capsys)
    assert _main(["--config-file", config]) == 2
    assert "error: no training set: pass --train-json FILE" in _one_error_line(capsys)


def test_a_missing_coco_annotation_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # detectron2's COCO paths are relative: no datasets/ here
    config = _config(tmp_path, **{"DATASETS.TRAIN": "('coco_2017_train',)"})
    assert _main(["--config-file", config]) == 2
    line = _one_error_line(capsys)
    assert "DATASETS.TRAIN coco_2017_train: " in line
    assert "annotations/instances_train2017.json not found" in line


def test_unexpected_errors_are_not_turned_into_one_line(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    config = _config(tmp_path, **{"MODEL.RETINAMASK.TRAIN_TOPK": -1})
    args = ["--config-file", config, "--eval-only", "MODEL.WEIGHTS", str(weights)]
    with pytest.raises(ValueError, match="TRAIN_TOPK must be >= 0"):  # raised by the model
        train_net.main(train_net.argument_parser().parse_args(args))


def test_data_errors_name_the_file_and_annotation(tmp_path, capsys):
    bad = ann(3, segmentation=[[4.0, 4.0, float("nan"), 14.0, 4.0, 14.0]])
    json_file, image_root = write_coco_json(tmp_path, [ann(1), bad])
    argv = ["--config-file", _config(tmp_path), "--train-json", json_file]
    assert _main(argv + ["--train-images", image_root]) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: {json_file}: annotation id 3 (image id 1, '1.png')")


def test_a_bad_test_set_stops_before_training(tmp_path, capsys):
    train = tmp_path / "train"
    test = tmp_path / "test"
    train.mkdir(), test.mkdir()
    train_json, train_images = write_coco_json(train, [ann(1)])
    test_json, test_images = write_coco_json(test, [ann(1), ann(1)])  # a duplicate annotation id
    argv = ["--config-file", _config(tmp_path), "--train-json", train_json]
    argv += ["--train-images", train_images, "--test-json", test_json, "--test-images", test_images]
    assert _main(argv) == 2
    assert _one_error_line(capsys).startswith(f"error: {test_json}: annotation id 1: 2 annotations")
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_eval_only_on_a_test_set_with_other_classes(tmp_path, capsys):
    names = ["bird", "cat", "dog", "fish"]
    json_file, image_root = write_coco_json(tmp_path, [ann(1)])  # categories cat, dog
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    config = _config(tmp_path, **{"MODEL.RETINAMASK.CLASS_NAMES": json.dumps(names)})
    argv = ["--config-file", config, "--eval-only", "--test-json", json_file]
    assert _main(argv + ["--test-images", image_root, "MODEL.WEIGHTS", str(weights)]) == 2
    line = _one_error_line(capsys)
    assert "['cat', 'dog'] are not the model's ['bird', 'cat', 'dog', 'fish']" in line
    mapped = ["MODEL.RETINAMASK.TEST_CLASSES_BY_NAME", "True"]
    assert _main(argv + ["--test-images", image_root, "MODEL.WEIGHTS", str(weights), *mapped]) == 2
    assert f"error: {weights}: an empty file (0 bytes)" in _one_error_line(capsys)


def test_as_a_script_exit_code_2_without_traceback(tmp_path):
    command = [sys.executable, str(ROOT / "train_net.py"), "--config-file", _config(tmp_path)]
    done = subprocess.run(command + ["MODEL.NOPE", "1"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: bad config")


def test_errors_from_data_loader_workers_show_their_own_message(tmp_path):
    from torch.utils.data import DataLoader

    from retinamask_d2.data.image_io import ImageReadError

    class Broken:
        def __len__(self):
            return 1

        def __getitem__(self, index):
            raise ImageReadError("/data/x.jpg: truncated or corrupt image data")

    with pytest.raises(ImageReadError) as error:
        next(iter(DataLoader(Broken(), num_workers=1)))
    assert "Original Traceback" in str(error.value)
    assert train_net.user_message(error.value) == "/data/x.jpg: truncated or corrupt image data"


def _train_argv(tmp_path, **opts) -> list[str]:
    json_file, image_root = write_coco_json(tmp_path, [ann(1)])
    config = _config(tmp_path, **{"SOLVER.MAX_ITER": 1, "DATALOADER.NUM_WORKERS": 0, **opts})
    return ["--config-file", config, "--train-json", json_file, "--train-images", image_root]


def test_an_empty_test_set_stops_before_training(tmp_path, capsys):
    test = tmp_path / "test"
    test.mkdir()
    test_json, test_images = write_coco_json(test, [], images=[])
    argv = _train_argv(tmp_path) + ["--test-json", test_json, "--test-images", test_images]
    assert _main(argv) == 2
    assert _one_error_line(capsys) == (
        f"error: {test_json}: 'images' is empty; dataset 'coco_json_test' in DATASETS.TEST has "
        "nothing to evaluate"
    )
    assert not (tmp_path / "out" / "model_final.pth").exists()
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    eval_argv = ["--config-file", _config(tmp_path), "--eval-only", "--test-json", test_json]
    assert _main(eval_argv + ["--test-images", test_images, "MODEL.WEIGHTS", str(weights)]) == 2
    assert "'images' is empty" in _one_error_line(capsys)


def test_config_values_that_cannot_run_are_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    cases = [
        (["OUTPUT_DIR", str(tmp_path / "a_file")], f"OUTPUT_DIR {tmp_path / 'a_file'}: is a file"),
        (["SOLVER.MAX_ITER", "0"], "SOLVER.MAX_ITER must be at least 1, got 0"),
        (["MODEL.WEIGHTS", str(tmp_path)], f"MODEL.WEIGHTS {tmp_path}: is a folder"),
        (["MODEL.WEIGHTS", str(tmp_path / "no.pth")], f"{tmp_path / 'no.pth'}: no such file"),
        (["MODEL.WEIGHTS", "http://127.0.0.1:9/w.pth"], "http://127.0.0.1:9/w.pth: cannot be"),
    ]
    argv = _train_argv(tmp_path)
    for opts, message in cases:
        assert _main(argv + opts) == 2, opts
        assert message in _one_error_line(capsys)
        for name in train_net.CLI_DATASET_NAMES.values():  # registered again by the next run
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)


def test_resuming_onto_a_checkpoint_of_another_class_count_is_one_line(tmp_path, capsys):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    out = tmp_path / "out"
    out.mkdir()
    DetectionCheckpointer(build_model(get_tiny_cfg(num_classes=3)), str(out)).save("model_0000004")
    (out / "last_checkpoint").write_text("model_0000004.pth")
    assert _main(_train_argv(tmp_path) + ["--resume"]) == 2  # the json has 2 categories
    line = _one_error_line(capsys)
    assert line.startswith(f"error: --resume: {out} holds a run of another model: ")
    assert "head.cls_score.weight [27, 64, 3, 3] in the file, [18, 64, 3, 3] in the model" in line


def test_eval_only_keeps_the_training_config(tmp_path, capsys):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model

    cfg = get_tiny_cfg(num_classes=2)
    out = tmp_path / "out"
    out.mkdir()
    DetectionCheckpointer(build_model(cfg), str(out)).save("model_final")
    (out / "config.yaml").write_text("# the training run's\n")
    json_file, image_root = write_coco_json(tmp_path, [ann(1)])
    argv = ["--config-file", _config(tmp_path), "--eval-only", "--test-json", json_file]
    argv += ["--test-images", image_root, "MODEL.WEIGHTS", str(out / "model_final.pth")]
    argv += ["MODEL.RETINAMASK.CLASS_NAMES", '["cat", "dog"]', "MODEL.RETINANET.NUM_CLASSES", "2"]
    train_net.main(train_net.argument_parser().parse_args(argv))
    assert (out / "config.yaml").read_text() == "# the training run's\n"
    assert "NUM_CLASSES: 2" in (out / train_net.EVAL_CONFIG_NAME).read_text()


def test_duplicate_category_names_name_both_ids(tmp_path, capsys):
    categories = [{"id": 1, "name": "disk"}, {"id": 2, "name": "disk"}, {"id": 3, "name": "bar"}]
    json_file, image_root = write_coco_json(tmp_path, [ann(1)], categories=categories)
    argv = ["--config-file", _config(tmp_path), "--train-json", json_file]
    assert _main(argv + ["--train-images", image_root]) == 2
    assert _one_error_line(capsys) == (
        f"error: {json_file}: category ids 1 and 2 are both named 'disk'; class names must be "
        "unique (merge them, or rename one)"
    )
