"""Reduced-precision inference: the model run under ``torch.autocast``."""

from contextlib import nullcontext
from functools import partial

import torch

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(device: str | torch.device, precision: str):
    """A factory of the context to run the model in: nothing for "fp32", else autocast to
    ``precision`` ("bf16" or "fp16") on ``device``'s type.

    Autocast keeps detectron2's and torchvision's precision-sensitive steps (box decoding,
    RoIAlign, NMS) in float32 and runs convolutions in the lower precision, so no model code
    needs to change. fp16 is for GPUs; CPUs run bf16 far faster.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext
    device_type = torch.device(device).type
    return partial(torch.autocast, device_type=device_type, dtype=dtype)
