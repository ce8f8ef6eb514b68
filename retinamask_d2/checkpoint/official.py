"""Conversion of the official RetinaMask checkpoints (chengyangfu/retinamask, a
maskrcnn-benchmark fork) to this project's model.

An explicit map, not detectron2's ``align_and_update_state_dicts``: that one matches names by
suffix heuristics and skips what it cannot match, while a converted model must have every tensor
from its checkpoint. Each tensor of the model comes from one named official tensor (or, for a
frozen BN, from four), in the official layout converted:

- RetinaNet head: the official anchor order inside a location is ratio-major, detectron2's is
  size-major, so the per-anchor channel blocks of ``cls_logits`` / ``bbox_pred`` are permuted.
  Both lay out channels anchor-major (``anchor * K + class``) with the same 80 classes, in the
  order of the sorted COCO category ids.
- Mask predictor: the official one has 81 outputs, background first; channel 0 is dropped.
- Frozen BN: the official one computes ``x * w / sqrt(var) + b - mean * w / sqrt(var)`` without
  an eps; the converted scale and shift are stored with mean 0 and var ``1 - eps`` so that
  detectron2's ``FrozenBatchNorm2d`` (which adds its eps) gives the same result.
- GN (FPN and head towers): same ``GroupNorm(32, C)`` parameters, renamed. The official GN FPN
  convs have a bias, which needs ``MODEL.RETINAMASK.FPN_NORM_CONV_BIAS``.

Unknown, missing and mis-shaped tensors stop the conversion with their full list.
"""

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from detectron2.layers import FrozenBatchNorm2d
from torch import Tensor, nn

from ..modeling.anchor_generator import official_cell_anchors

__all__ = [
    "OfficialCheckpointError",
    "convert_official_state_dict",
    "load_official_state_dict",
    "sha256_of",
    "to_detectron2_checkpoint",
]

# Model tensors the official checkpoints do not hold: the running statistics of the
# self-adjusting smooth L1 loss live in an official loss object that is not a module. They only
# matter for training and keep their initial values.
_TRAINING_ONLY = ("box_reg_loss.running_mean", "box_reg_loss.running_var")
_ANCHORS = re.compile(r"rpn\.anchor_generator\.cell_anchors\.(\d+)")


class OfficialCheckpointError(ValueError):
    """The official checkpoint does not fit the model built from the config."""


def load_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an official checkpoint file, without a ``module.`` prefix.

    maskrcnn-benchmark saves ``{"model": state_dict, ...}`` (plus optimizer and scheduler when
    saved during training) from a DistributedDataParallel model, hence the prefix.
    """
    loaded = torch.load(str(path), map_location="cpu", weights_only=False)
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else loaded
    if not isinstance(state, Mapping):
        raise OfficialCheckpointError(f"{path} holds no state dict (got {type(state).__name__}).")
    return {k.removeprefix("module."): v for k, v in state.items()}


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def to_detectron2_checkpoint(model_state: dict[str, Tensor], source: str | Path) -> dict:
    """The checkpoint dict detectron2's ``DetectionCheckpointer`` loads as it is: exact names
    (``matching_heuristics`` off), with the source file and its sha256 recorded."""
    return {
        "model": model_state,
        "__author__": "chengyangfu/retinamask, converted by retinamask_d2",
        "matching_heuristics": False,
        "source": {"file": Path(source).name, "sha256": sha256_of(source)},
    }


# Renamed prefixes whose layout is the same (the official head towers are, like detectron2's,
# Sequential(conv, [GroupNorm], ReLU) repeated, so their indices match).
_PREFIXES = {
    "backbone.top_block.": "backbone.fpn.top_blocks.",
    "head.cls_subnet.": "rpn.head.cls_tower.",
    "head.bbox_subnet.": "rpn.head.bbox_tower.",
    "head.cls_score.": "rpn.head.cls_logits.",
    "head.bbox_pred.": "rpn.head.bbox_pred.",
    "mask_branch.mask_head.mask_fcn": "mask.feature_extractor.mask_fcn",
    "mask_branch.mask_head.deconv.": "mask.predictor.conv5_mask.",
    "mask_branch.mask_head.predictor.": "mask.predictor.mask_fcn_logits.",
}


def _official_name(key: str, normed: bool = False) -> str | None:
    """The official name of a detectron2 tensor or FrozenBN module; None when it has none.

    ``normed``: ``key`` belongs to an FPN conv with a norm, which the official code builds as
    ``Sequential(conv, norm)``.
    """
    if m := re.fullmatch(r"backbone\.bottom_up\.stem\.conv1(\.norm)?(.*)", key):
        return f"backbone.body.stem.{'bn1' if m[1] else 'conv1'}{m[2]}"
    if m := re.fullmatch(
        r"backbone\.bottom_up\.res(\d)\.(\d+)\.(shortcut|conv\d)(\.norm)?(.*)", key
    ):
        # detectron2's res2..res5 are the official layer1..layer4
        part, norm = m[3], bool(m[4])
        if part == "shortcut":
            part = "downsample.1" if norm else "downsample.0"
        elif norm:
            part = f"bn{part[-1]}"
        return f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.{part}{m[5]}"
    if m := re.fullmatch(r"backbone\.fpn_(lateral|output)(\d)(\.norm)?(.*)", key):
        # detectron2's level 3 (from res3) is the official FPN block 2 (block 1 is C2's, unused)
        block = {"lateral": "fpn_inner", "output": "fpn_layer"}[m[1]] + str(int(m[2]) - 1)
        inner = ".1" if m[3] else ".0" if normed else ""
        return f"backbone.fpn.{block}{inner}{m[4]}"
    for ours, theirs in _PREFIXES.items():
        if key.startswith(ours):
            return theirs + key[len(ours) :]
    return None


def _permute_anchors(num_sizes: int, num_ratios: int) -> Callable[[Tensor], Tensor]:
    """Reorder the per-anchor channel blocks of a head output from the official (ratio-major)
    to detectron2's (size-major) anchor order."""
    # detectron2 anchor d = s * num_ratios + r is official anchor r * num_sizes + s
    order = [(d % num_ratios) * num_sizes + d // num_ratios for d in range(num_sizes * num_ratios)]

    def permute(t: Tensor) -> Tensor:
        blocks = t.reshape(num_sizes * num_ratios, -1, *t.shape[1:])
        return blocks[order].reshape(t.shape)

    return permute


def _drop_background(t: Tensor) -> Tensor:
    return t[1:]


def convert_official_state_dict(
    official: Mapping[str, Tensor],
    model: nn.Module,
    *,
    anchor_sizes: list[list[float]],
    aspect_ratios: list[list[float]],
) -> dict[str, Tensor]:
    """The state dict of ``model`` with every tensor taken from ``official``.

    ``anchor_sizes`` / ``aspect_ratios`` are the model's per-level anchor settings
    (``MODEL.ANCHOR_GENERATOR``); the cell anchors the official checkpoint stores are checked
    against them, since its head was trained for those anchors.

    Raises:
        OfficialCheckpointError: naming every official tensor that is missing, not used or
            whose shape does not fit the model, and every level whose anchors differ.
    """
    official = {k.removeprefix("module."): v for k, v in official.items()}
    anchor_sizes, aspect_ratios = _per_level(anchor_sizes), _per_level(aspect_ratios)
    target = model.state_dict()
    frozen_bn = {
        name: module.eps
        for name, module in model.named_modules()
        if isinstance(module, FrozenBatchNorm2d)
    }
    num_sizes, num_ratios = len(anchor_sizes[0]), len(aspect_ratios[0])
    transforms: dict[str, Callable[[Tensor], Tensor]] = {
        "rpn.head.cls_logits": _permute_anchors(num_sizes, num_ratios),
        "rpn.head.bbox_pred": _permute_anchors(num_sizes, num_ratios),
        "mask.predictor.mask_fcn_logits": _drop_background,
    }

    converted: dict[str, Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    misshaped: list[str] = []
    unmapped: list[str] = []
    for key, like in target.items():
        if key in _TRAINING_ONLY:
            converted[key] = like.clone()
            continue
        module_name = key.rpartition(".")[0]
        if module_name in frozen_bn:
            continue  # converted per module below
        name = _official_name(key, normed=f"{module_name}.norm.weight" in target)
        if name is None:
            unmapped.append(key)
            continue
        if name not in official:
            missing.append(f"{name} (for {key})")
            continue
        used.add(name)
        value = official[name]
        module = name.rpartition(".")[0]
        extra_rows = 1 if transforms.get(module) is _drop_background else 0
        wanted = (like.shape[0] + extra_rows, *like.shape[1:]) if like.dim() else like.shape
        if value.shape != wanted:
            misshaped.append(
                f"{name}: {tuple(value.shape)}, the model's {key} needs {tuple(wanted)}"
            )
            continue
        if module in transforms:
            value = transforms[module](value)
        converted[key] = value.to(like.dtype).clone()

    for module_name, eps in frozen_bn.items():
        source = _official_name(module_name)
        names = {p: f"{source}.{p}" for p in ("weight", "bias", "running_mean", "running_var")}
        absent = [n for n in names.values() if n not in official]
        if absent:
            missing.extend(f"{n} (for {module_name})" for n in absent)
            continue
        used.update(names.values())
        like = target[f"{module_name}.weight"]
        wrong = [n for n in names.values() if official[n].shape != like.shape]
        if wrong:
            misshaped.extend(
                f"{n}: {tuple(official[n].shape)}, the model's {module_name} needs "
                f"{tuple(like.shape)}"
                for n in wrong
            )
            continue
        w, b, mean, var = (official[names[p]].double() for p in names)
        scale = w * var.rsqrt()
        converted[f"{module_name}.weight"] = scale.to(like.dtype)
        converted[f"{module_name}.bias"] = (b - mean * scale).to(like.dtype)
        converted[f"{module_name}.running_mean"] = torch.zeros_like(like)
        converted[f"{module_name}.running_var"] = torch.full_like(like, 1.0 - eps)

    anchor_errors = _check_cell_anchors(official, used, model, anchor_sizes, aspect_ratios)
    unknown = sorted(set(official) - used)
    if missing or misshaped or unknown or unmapped or anchor_errors:
        parts = []
        for title, items in [
            ("missing from the checkpoint", missing),
            ("shaped unlike the model's", misshaped),
            ("in the checkpoint but not in the model", unknown),
            ("in the model without an official counterpart", unmapped),
            ("anchors unlike the config's", anchor_errors),
        ]:
            if items:
                parts.append(f"{len(items)} {title}:\n  " + "\n  ".join(items))
        hint = ""
        if any(k.startswith("backbone.fpn.fpn_") and k.endswith(".0.bias") for k in unknown):
            hint = "\n(FPN conv biases before GN: set MODEL.RETINAMASK.FPN_NORM_CONV_BIAS True.)"
        raise OfficialCheckpointError(
            "The official checkpoint does not fit the model of this config.\n"
            + "\n".join(parts)
            + hint
        )
    return converted


def _per_level(values: Sequence) -> list[list[float]]:
    """detectron2's anchor sizes or ratios as a list per level (one list: every level's)."""
    return [list(v) for v in values] if isinstance(values[0], Sequence) else [list(values)]


def _check_cell_anchors(
    official: Mapping[str, Tensor],
    used: set[str],
    model: nn.Module,
    anchor_sizes: list[list[float]],
    aspect_ratios: list[list[float]],
) -> list[str]:
    """Compare the official checkpoint's stored cell anchors (one per level) with the official
    anchors of the config's sizes, ratios and strides; return one line per mismatch, and add the
    compared keys to ``used``."""
    stored = {int(m.group(1)): k for k in official if (m := _ANCHORS.fullmatch(k))}
    if not stored:
        return []
    strides = model.anchor_generator.strides
    sizes = anchor_sizes * len(strides) if len(anchor_sizes) == 1 else anchor_sizes
    ratios = aspect_ratios * len(strides) if len(aspect_ratios) == 1 else aspect_ratios
    errors = []
    if sorted(stored) != list(range(len(strides))):
        errors.append(f"{len(stored)} levels of cell anchors, the model has {len(strides)}")
    for level, (stride, s, r) in enumerate(zip(strides, sizes, ratios)):
        if level not in stored:
            continue
        used.add(stored[level])
        have, want = official[stored[level]].float(), official_cell_anchors(stride, s, r)
        if have.shape != want.shape or not torch.allclose(have, want, atol=1e-2):
            errors.append(
                f"{stored[level]}: stride {stride}, sizes {list(s)}, ratios {list(r)} give "
                f"{want.tolist()}, the checkpoint has {have.tolist()}"
            )
    return errors
