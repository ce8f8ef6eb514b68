"""detectron2's checkpointer, with errors that name the file and a resume that survives a
damaged last checkpoint.

A checkpoint cut short (a full disk, a killed copy) makes torch raise a zip-reader error that
names no file, and ``--resume`` then stops although OUTPUT_DIR holds older intact checkpoints;
a file that is not a checkpoint at all gets torch's advice to unpickle it without restrictions.
:class:`CheckedCheckpointer` says which file is what, and resumes from the newest checkpoint
that loads.
"""

from __future__ import annotations

import logging
import os
import zipfile
from typing import Any

from detectron2.checkpoint import DetectionCheckpointer

from .compatibility import LoadReport, judge_fit
from .errors import CheckpointError, CheckpointMismatchError
from .imagenet import backbone_source, describe_backbone_load

logger = logging.getLogger(__name__)

# detectron2's own formats of model-zoo files, loaded by detectron2 as they always were.
MODEL_ZOO_SUFFIXES = (".pkl", ".pyth")
_SIGNATURES = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"{": "a JSON or text file",
    b"[": "a JSON or text file",
    b"\x1f\x8b": "a gzip file",
}


class CheckedCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose load errors are :class:`CheckpointError` naming the file,
    and whose ``resume_or_load`` falls back to the newest intact checkpoint of ``save_dir``.

    ``fit`` says which weights fit the model (:func:`~.compatibility.judge_fit`): "inference"
    (evaluation, the predictor) needs every parameter from the file; "training" also accepts
    the documented fresh starts (an ImageNet backbone, a detectron2 RetinaNet, another class
    count) with one line saying what starts fresh, except when resuming; None keeps
    detectron2's warn-and-go-on.
    """

    def __init__(self, *args, fit: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if fit not in (None, "inference", "training"):
            raise ValueError(f"fit must be None, 'inference' or 'training', got {fit!r}")
        self.fit = fit
        self._loading = ""
        self._resuming = False
        self._fresh_start = ""

    def load(self, path: str, *args, **kwargs) -> dict[str, Any]:
        self._loading = path
        local = _local_file(path, self.path_manager) if path else path
        try:
            return super().load(local, *args, **kwargs)
        finally:
            # detectron2 main keeps the URL being loaded in this attribute and asserts that it is
            # unset when a load starts; a load that raised leaves it set, which would stop the
            # fallback to the next checkpoint (v0.6 has no such attribute).
            if hasattr(self, "_parsed_url_during_load"):
                self._parsed_url_during_load = None

    def _load_model(self, checkpoint: Any):
        source, loaded = backbone_source(checkpoint), len(checkpoint["model"])
        incompatible = super()._load_model(checkpoint)
        if self.fit is not None:
            report = LoadReport.from_incompatible(incompatible, self.model.state_dict())
            training = self.fit == "training" and not self._resuming
            self._fresh_start = judge_fit(report, self._loading, starting_training=training)
            if self._fresh_start and source is not None:  # say which ImageNet file it was
                self._fresh_start = describe_backbone_load(
                    source, loaded, incompatible.missing_keys
                )
        elif source is not None:
            logger.info(describe_backbone_load(source, loaded, incompatible.missing_keys))
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        if self.fit is None:
            super()._log_incompatible_keys(incompatible)
        elif self._fresh_start:  # instead of one warning per parameter
            self.logger.info(self._fresh_start)

    def _load_file(self, filename: str) -> dict[str, Any]:
        if filename.endswith(MODEL_ZOO_SUFFIXES):
            return super()._load_file(filename)
        try:
            loaded = super()._load_file(filename)
        except Exception as e:
            raise CheckpointError(f"{filename}: {describe_unloadable(filename, e)}") from None
        if not isinstance(loaded.get("model"), dict):
            raise CheckpointError(
                f"{filename}: a PyTorch file, but not a checkpoint: its 'model' is a "
                f"{type(loaded.get('model')).__name__}, not a dict of weights"
            )
        return loaded

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        if not (resume and self.has_checkpoint()):
            return super().resume_or_load(path, resume=resume)
        last = self.get_checkpoint_file()
        candidates = [last] + [f for f in self._newest_first() if f != last]
        failures = []
        self._resuming = True
        try:
            return self._resume_from(candidates, last, failures)
        finally:
            self._resuming = False

    def _resume_from(self, candidates: list[str], last: str, failures: list[str]):
        for candidate in candidates:
            if not os.path.isfile(candidate):
                failures.append(f"{candidate}: no such file")
                continue
            try:
                loaded = self.load(candidate)
            except CheckpointMismatchError as e:  # older checkpoints are of the same run
                raise CheckpointMismatchError(
                    f"--resume: {self.save_dir} holds a run of another model: {e}; resume with "
                    "that run's config, or train into another OUTPUT_DIR"
                ) from None
            except CheckpointError as e:
                failures.append(str(e))
                logger.warning(f"cannot resume from {e}")
                continue
            if candidate != last:
                logger.warning(
                    f"resuming from {candidate}, the newest intact checkpoint in {self.save_dir}, "
                    f"instead of {last} (named by last_checkpoint)"
                )
            return loaded
        raise CheckpointError(
            f"no intact checkpoint to resume from in {self.save_dir}: " + "; ".join(failures)
        )

    def _newest_first(self) -> list[str]:
        files = self.get_all_checkpoint_files()
        return sorted(files, key=lambda f: (os.path.getmtime(f), f), reverse=True)


def _local_file(path: str, path_manager) -> str:
    """``path`` checked to be a file, or a URL downloaded (its local copy); else a
    :class:`CheckpointError` naming it (detectron2 asserts, or raises the download's error)."""
    if "://" in path:
        try:
            return path_manager.get_local_path(path)
        except Exception as e:
            raise CheckpointError(
                f"{path}: cannot be downloaded ({type(e).__name__}: {e}); download it "
                "elsewhere and pass the local file"
            ) from None
    if os.path.isdir(path):
        raise CheckpointError(f"{path}: is a folder; name the checkpoint file (.pth) in it")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    return path


def describe_unloadable(filename: str, error: Exception) -> str:
    """What a file that torch could not load as a checkpoint is, judged from its bytes."""
    size = os.path.getsize(filename)
    if size == 0:
        return "an empty file (0 bytes), not a checkpoint"
    with open(filename, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(filename):
            return (
                f"a truncated or corrupt checkpoint ({size} bytes; its zip archive is incomplete)"
            )
        with zipfile.ZipFile(filename) as archive:
            names = archive.namelist()
        if not any(name.endswith("data.pkl") for name in names):
            return "a zip archive, not a PyTorch checkpoint"
        return (
            "a PyTorch file that does not load as a checkpoint of weights: it holds objects "
            "other than tensors and plain containers, which are not loaded because loading "
            f"them could run code from the file ({type(error).__name__})"
        )
    if head.startswith(b"\x80"):
        return (
            "a Python pickle that does not load as a checkpoint of weights; objects other than "
            "tensors and plain containers are not loaded because loading them could run code "
            "from the file"
        )
    for signature, what in _SIGNATURES.items():
        if head.startswith(signature):
            return f"{what}, not a PyTorch checkpoint"
    return f"not a PyTorch checkpoint (it starts with the bytes {head!r})"
