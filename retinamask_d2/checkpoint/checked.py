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

import torch
from detectron2.checkpoint import DetectionCheckpointer

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


class CheckpointError(ValueError):
    """A file that cannot be loaded as a checkpoint; the message names it and says why."""


class CheckedCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` whose load errors are :class:`CheckpointError` naming the file,
    and whose ``resume_or_load`` falls back to the newest intact checkpoint of ``save_dir``.

    With ``refuse_mismatched_shapes`` (evaluation), weights whose shapes do not fit the model are
    an error instead of a warning: the skipped layers would be evaluated at random.
    """

    def __init__(self, *args, refuse_mismatched_shapes: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.refuse_mismatched_shapes = refuse_mismatched_shapes
        self._loading = ""

    def load(self, path: str, *args, **kwargs) -> dict[str, Any]:
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            # detectron2 main keeps the URL being loaded in this attribute and asserts that it is
            # unset when a load starts; a load that raised leaves it set, which would stop the
            # fallback to the next checkpoint (v0.6 has no such attribute).
            if hasattr(self, "_parsed_url_during_load"):
                self._parsed_url_during_load = None

    def _load_model(self, checkpoint: Any):
        source, loaded = backbone_source(checkpoint), len(checkpoint["model"])
        incompatible = super()._load_model(checkpoint)
        if source is not None:
            logger.info(describe_backbone_load(source, loaded, incompatible.missing_keys))
        if self.refuse_mismatched_shapes and incompatible.incorrect_shapes:
            shown = ", ".join(
                f"{key} {tuple(saved)} in the file, {tuple(wanted)} in the model"
                for key, saved, wanted in incompatible.incorrect_shapes[:3]
            )
            raise CheckpointError(
                f"{self._loading}: {len(incompatible.incorrect_shapes)} weight(s) do not fit the "
                f"model ({shown}); evaluate with the config the weights were trained with"
            )
        return incompatible

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
        for candidate in candidates:
            if not os.path.isfile(candidate):
                failures.append(f"{candidate}: no such file")
                continue
            try:
                loaded = self.load(candidate)
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


def check_loadable(path: str) -> None:
    """Raise :class:`CheckpointError` if the local file ``path`` does not load as a checkpoint
    (other paths, e.g. URLs and model-zoo formats, are left to detectron2)."""
    if os.path.isfile(path) and not path.endswith(MODEL_ZOO_SUFFIXES):
        CheckedCheckpointer(torch.nn.Module())._load_file(path)


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
