"""Damaged and foreign checkpoint files are named and described; --resume falls back to the
newest intact checkpoint and says so; evaluation refuses weights that do not fit the model."""

import logging
import os
import pickle

import pytest
import torch
from torch import nn

from retinamask_d2.checkpoint.checked import CheckedCheckpointer, CheckpointError


class _Counter:
    """A checkpointable whose state says which checkpoint was loaded."""

    def __init__(self):
        self.value = -1

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]


def _saved(tmp_path, names=("model_0000001", "model_0000002")):
    counter = _Counter()
    checkpointer = CheckedCheckpointer(nn.Linear(2, 2), str(tmp_path), counter=counter)
    for i, name in enumerate(names):
        counter.value = i
        checkpointer.save(name)
        os.utime(tmp_path / f"{name}.pth", (1000 + i, 1000 + i))  # saved in this order
    counter.value = -1
    return checkpointer, counter


def test_resume_falls_back_to_the_newest_intact_checkpoint_and_says_so(tmp_path, caplog):
    checkpointer, counter = _saved(tmp_path, ("model_0000001", "model_0000002", "model_0000003"))
    last = tmp_path / "model_0000003.pth"
    last.write_bytes(last.read_bytes()[:500])  # cut short, as by a full disk
    with caplog.at_level(logging.WARNING, logger="retinamask_d2"):
        checkpointer.resume_or_load("", resume=True)
    assert counter.value == 1  # model_0000002, not the older model_0000001
    log = caplog.text
    assert f"cannot resume from {last}: a truncated or corrupt checkpoint" in log
    assert f"resuming from {tmp_path / 'model_0000002.pth'}, the newest intact" in log


def test_resume_with_no_intact_checkpoint_lists_them(tmp_path):
    checkpointer, _ = _saved(tmp_path)
    for name in ("model_0000001.pth", "model_0000002.pth"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(CheckpointError) as error:
        checkpointer.resume_or_load("", resume=True)
    message = str(error.value)
    assert message.startswith(f"no intact checkpoint to resume from in {tmp_path}")
    assert message.count("an empty file (0 bytes)") == 2


class _NotWeights:
    pass


@pytest.mark.parametrize(
    "write, what",
    [
        (lambda p: p.write_text('{"model": 1}'), "a JSON or text file, not a PyTorch checkpoint"),
        (lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n...."), "a PNG image, not a PyTorch"),
        (lambda p: p.write_bytes(b""), "an empty file (0 bytes)"),
        (lambda p: p.write_bytes(pickle.dumps(_NotWeights())), "a Python pickle that does not"),
        (lambda p: torch.save({"model": _NotWeights()}, p), "holds objects other than tensors"),
        (lambda p: torch.save({"model": torch.zeros(2)}, p), "its 'model' is a Tensor"),
    ],
)
def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, write, what):
    path = tmp_path / "weights.pth"
    write(path)
    with pytest.raises(CheckpointError) as error:
        CheckedCheckpointer(nn.Linear(2, 2)).load(str(path))
    message = str(error.value)
    assert message.startswith(f"{path}: ") and what in message
    assert "weights_only" not in message  # no advice to unpickle an unknown file


def test_evaluation_refuses_weights_of_another_shape(tmp_path):
    CheckedCheckpointer(nn.Linear(2, 4), str(tmp_path)).save("four")
    path = str(tmp_path / "four.pth")
    CheckedCheckpointer(nn.Linear(2, 3)).load(path)  # fit None: detectron2 warns and goes on
    with pytest.raises(CheckpointError) as error:
        CheckedCheckpointer(nn.Linear(2, 3), fit="inference").load(path)
    assert str(error.value).startswith(
        f"{path} does not fit the model: parameters 2 of another shape (weight [4, 2] in the "
        "file, [3, 2] in the model, bias [4] in the file, [3] in the model)"
    )


def test_the_predictor_says_what_a_bad_weights_file_is(tmp_path):
    from retinamask_d2.predictor import RetinaMaskPredictor
    from tests.common import get_tiny_cfg

    cfg = get_tiny_cfg()
    cfg.MODEL.WEIGHTS = str(tmp_path / "model.pth")
    (tmp_path / "model.pth").write_text('{"not": "weights"}')
    with pytest.raises(CheckpointError) as error:
        RetinaMaskPredictor(cfg)
    assert (
        str(error.value)
        == f"{tmp_path / 'model.pth'}: a JSON or text file, not a PyTorch checkpoint"
    )
