"""Whether a checkpoint fits the model it was loaded into, judged from what did not load.

detectron2's checkpointer loads whatever matches, skips the rest and logs one warning per skipped
parameter: R-18 weights under an R-50 config, or 3-class weights under a 4-class config, then
give a half-random model that predicts confidently. :func:`judge_fit` turns the checkpointer's
incompatible keys into a refusal that lists what does not match, or, for the cases where a
fresh start of some parts is the point (starting a training run), one line saying what starts
fresh.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .errors import CheckpointMismatchError

# Statistics of the self-adjusting smooth L1 loss: used by training only, absent from detectron2
# RetinaNet checkpoints and from converted official ones; they restart from their initial value.
TRAINING_ONLY = ("box_reg_loss.",)
BOTTOM_UP = "backbone.bottom_up."
MASK_BRANCH = "mask_branch."
# P6 of detectron2's RetinaNet comes from res5, RetinaMask's from P5 (another input width).
TOP_BLOCK = "backbone.top_block."
# The layers whose shape is the class count: they start fresh when fine-tuning to other classes.
CLASS_LAYERS = ("head.cls_score.", "mask_branch.mask_head.predictor.")
MAX_SHOWN = 6


@dataclass(frozen=True)
class LoadReport:
    """What a load left out: model keys not loaded, checkpoint keys not used, shape clashes."""

    missing: list[str]
    unexpected: list[str]
    mis_shaped: list[tuple[str, tuple, tuple]]  # (key, shape in the file, shape in the model)
    model_keys: list[str]

    @classmethod
    def from_incompatible(cls, incompatible, model_keys) -> LoadReport:
        return cls(
            missing=[k for k in incompatible.missing_keys if not k.startswith(TRAINING_ONLY)],
            unexpected=list(incompatible.unexpected_keys),
            mis_shaped=[(k, tuple(a), tuple(b)) for k, a, b in incompatible.incorrect_shapes],
            model_keys=list(model_keys),
        )

    @property
    def loaded(self) -> set[str]:
        kept = {k for k in self.model_keys if not k.startswith(TRAINING_ONLY)}
        return kept - set(self.missing) - {k for k, _, _ in self.mis_shaped}


def judge_fit(report: LoadReport, path: str, starting_training: bool) -> str:
    """One line saying what starts fresh ("" when everything loaded), or a
    :class:`CheckpointMismatchError` listing what does not fit.

    Inference (and resuming) needs every parameter from the file. A training run may start from
    an ImageNet backbone (only ``backbone.bottom_up`` loads), from a detectron2 RetinaNet (no
    mask branch in the file: it, and P6 where it comes from res5 there, start fresh), or from a
    RetinaMask of another class count (the class layers start fresh).
    """
    if not (report.missing or report.unexpected or report.mis_shaped):
        return ""
    if starting_training:
        fresh = _documented_fresh_start(report)
        if fresh:
            return f"{path}: {fresh}"
    problems = []
    if report.mis_shaped:
        shown = ", ".join(
            f"{key} {list(saved)} in the file, {list(wanted)} in the model"
            for key, saved, wanted in report.mis_shaped[:MAX_SHOWN]
        )
        more = len(report.mis_shaped) - MAX_SHOWN
        shown += f" and {more} more" if more > 0 else ""
        problems.append(f"{len(report.mis_shaped)} of another shape ({shown})")
    not_loaded = sorted(set(report.missing) - {k for k, _, _ in report.mis_shaped})
    if not_loaded:
        problems.append(f"{len(not_loaded)} not in the file ({_grouped(not_loaded)})")
    if report.unexpected:
        problems.append(
            f"{len(report.unexpected)} in the file that the model has not "
            f"({_grouped(report.unexpected)})"
        )
    hint = (
        "use the config the weights were trained with"
        if not starting_training
        else "start from weights of this architecture, an ImageNet backbone or a detectron2 "
        "RetinaNet"
    )
    raise CheckpointMismatchError(
        f"{path} does not fit the model: parameters {'; '.join(problems)}; {hint}"
    )


def _documented_fresh_start(report: LoadReport) -> str:
    """What starts fresh when ``report`` is one of the documented training starts, else ""."""
    loaded = report.loaded
    fresh = set(report.missing) | {k for k, _, _ in report.mis_shaped}
    if loaded and all(k.startswith(BOTTOM_UP) for k in loaded):
        if not any(k.startswith(BOTTOM_UP) for k in fresh) and not report.mis_shaped:
            return "an ImageNet backbone: everything but backbone.bottom_up starts fresh"
        return ""
    if report.unexpected:
        return ""
    shaped = {k for k, _, _ in report.mis_shaped}
    model_mask = [k for k in report.model_keys if k.startswith(MASK_BRANCH)]
    no_mask_in_file = bool(model_mask) and all(k in report.missing for k in model_mask)
    if no_mask_in_file and all(k.startswith((MASK_BRANCH, TOP_BLOCK)) for k in fresh):
        if any(k.startswith(TOP_BLOCK) for k in fresh):
            return "a detectron2 RetinaNet checkpoint: the mask branch and P6 start fresh"
        return "a detectron2 RetinaNet checkpoint: the mask branch starts fresh"
    if fresh == shaped and all(k.startswith(CLASS_LAYERS) for k in fresh):
        return (
            "a checkpoint of another class count: the class layers "
            f"({', '.join(sorted({k.rsplit('.', 1)[0] for k in fresh}))}) start fresh"
        )
    return ""


def _grouped(keys: list[str]) -> str:
    """Keys counted by their module, at most three levels down: ``backbone.bottom_up.res4 (24)``."""
    groups = Counter(".".join(k.split(".")[:-1][:3]) or k for k in keys)
    shown = ", ".join(f"{name} ({n})" for name, n in list(groups.items())[:MAX_SHOWN])
    more = len(groups) - MAX_SHOWN
    return shown + (f" and {more} more module(s)" if more > 0 else "")
