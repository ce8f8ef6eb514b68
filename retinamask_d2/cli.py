"""What the command-line tools (train_net.py, the demo, scripts/export_model.py) share: which
errors are the user's to fix and how they are shown, the MODEL.WEIGHTS checks, and the CPU
fallback of a CUDA config.

A user's mistake (a bad option, a config key, a dataset, an image, a checkpoint that does not
fit) ends the run with one ``error:`` line and exit code 2, without a traceback; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os

import torch
from detectron2.config import CfgNode

from retinamask_d2.checkpoint.errors import CheckpointError
from retinamask_d2.data.coco_json import CocoJsonError
from retinamask_d2.data.image_io import ImageReadError

logger = logging.getLogger(__name__)

USAGE_EXIT_CODE = 2


class UsageError(ValueError):
    """A command line or config that cannot run; the message says what to change."""


# Errors whose message is all a user needs: printed as one "error:" line, exit code 2.
USER_ERRORS = (UsageError, CocoJsonError, ImageReadError, CheckpointError)


def user_message(error: Exception) -> str:
    """The error's own message; for one re-raised from a data-loader worker (whose message is
    then the worker's whole traceback), the original message at its end."""
    message = str(error)
    if "Original Traceback" not in message:
        return message
    marker = f"{type(error).__module__}.{type(error).__qualname__}: "
    return message.rpartition(marker)[2].strip() or message


def fall_back_to_cpu(cfg: CfgNode) -> None:
    """Run a CUDA config (``cfg`` unfrozen) on the CPU when there is no GPU, with one warning."""
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning(f"MODEL.DEVICE is {cfg.MODEL.DEVICE} but no GPU is found: using the CPU")
        cfg.MODEL.DEVICE = "cpu"


def require_weights(cfg: CfgNode, config_file: str | os.PathLike | None = None) -> None:
    """Refuse an empty MODEL.WEIGHTS (an untrained model would predict noise), or a local one
    that is not a file; the checkpoint's content is checked when it loads
    (:class:`~retinamask_d2.checkpoint.checked.CheckedCheckpointer`)."""
    weights = cfg.MODEL.WEIGHTS
    if not weights:
        source = f" in {config_file}" if config_file else ""
        trained = os.path.join(os.path.dirname(config_file or ""), "model_final.pth")
        hint = f" (e.g. MODEL.WEIGHTS {trained})" if config_file and os.path.isfile(trained) else ""
        raise UsageError(
            f"MODEL.WEIGHTS is empty{source}: the model would be untrained; pass the trained "
            f"weights as MODEL.WEIGHTS FILE{hint}"
        )
    if "://" in weights:
        return
    if os.path.isdir(weights):
        raise UsageError(f"MODEL.WEIGHTS {weights}: is a folder; name the checkpoint file in it")
    if not os.path.isfile(weights):
        raise UsageError(f"MODEL.WEIGHTS {weights}: no such file")
