"""Config keys of RetinaMask.

RetinaMask reuses detectron2's existing nodes wherever one fits (``MODEL.RETINANET`` for the box
branch, ``MODEL.ROI_MASK_HEAD`` for the mask head and its RoIAlign) and adds only what has no home
there under ``MODEL.RETINAMASK``. Defaults of the new keys are the paper's values, except
``DROP_UNMASKED`` (see below); the paper's recipe for the existing keys lives in
``configs/Base-RetinaMask.yaml``.
"""

from detectron2.config import CfgNode as CN


def add_retinamask_config(cfg: CN) -> None:
    """Add the keys of RetinaMask to ``cfg`` (in place), like detectron2's ``add_*_config``."""
    _C = cfg

    _C.MODEL.RETINAMASK = CN()
    # FPN levels the mask branch pools from (paper: P3-P5, scales 1/8-1/32).
    _C.MODEL.RETINAMASK.MASK_IN_FEATURES = ["p3", "p4", "p5"]
    # Level assignment k = floor(k0 + log2(sqrt(w * h) / CANONICAL_BOX_SIZE)), k0 = CANONICAL_LEVEL,
    # clamped to the levels of MASK_IN_FEATURES (paper and FPN paper: 224 and 4).
    _C.MODEL.RETINAMASK.CANONICAL_BOX_SIZE = 224
    _C.MODEL.RETINAMASK.CANONICAL_LEVEL = 4
    # Training RoIs of an image: its top TRAIN_TOPK post-NMS detections (chosen without gradient)
    # plus all its GT boxes (paper: 100). At most TEST.DETECTIONS_PER_IMAGE detections exist.
    _C.MODEL.RETINAMASK.TRAIN_TOPK = 100
    # An RoI whose IoU with a GT box is >= POSITIVE_IOU trains the mask head (paper: 0.5).
    _C.MODEL.RETINAMASK.POSITIVE_IOU = 0.5
    # Weight of loss_mask in the total loss (paper: 1).
    _C.MODEL.RETINAMASK.MASK_LOSS_WEIGHT = 1.0
    # At test time the TEST_TOPK_MASKS highest-scoring detections get masks (paper: 50);
    # 0 gives box-only inference (no pred_masks, no mask branch cost).
    _C.MODEL.RETINAMASK.TEST_TOPK_MASKS = 50
    # True: return only those detections (as the paper and the official code do).
    # False (default): keep the other detections, with empty masks, so that box AP is computed on
    # the same up-to-100 detections as RetinaNet's and COCOEvaluator still gets a mask for every
    # detection. For mask AP the empty masks are false positives at their scores (each image's
    # lowest, but they can outrank other images' masks), so mask AP can be a little lower than
    # with True: use True to reproduce the paper's mask numbers.
    _C.MODEL.RETINAMASK.DROP_UNMASKED = False
    # RetinaNet's best (low-quality) anchor matching: each GT's highest-IoU anchors are positive.
    # detectron2 hard-codes it on; this switch exposes it (paper: on).
    _C.MODEL.RETINAMASK.ALLOW_LOW_QUALITY_MATCHES = True
    # With MODEL.FPN.NORM set, give the FPN's lateral and output convs a bias before their norm,
    # as the official GN models have (detectron2's FPN drops it). Not redundant under GN: a
    # per-channel shift changes the statistics of its group.
    _C.MODEL.RETINAMASK.FPN_NORM_CONV_BIAS = False

    # Multiplies loss_box_reg. detectron2 divides the box loss summed over the 4 coordinates by
    # the number of positive anchors; the official code divides it by 4x that number, i.e. it
    # averages over the coordinates: 0.25 reproduces that balance with the cls loss.
    _C.MODEL.RETINAMASK.BOX_REG_LOSS_WEIGHT = 0.25

    # Self-adjusting smooth L1 for box regression (paper section 3.3): beta per box coordinate is
    # clamp(running_mean - running_var, BETA_MIN, BETA_MAX) of |prediction - target| over the
    # positive anchors. When off, RETINANET.SMOOTH_L1_LOSS_BETA / BBOX_REG_LOSS_TYPE apply.
    _C.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1 = CN()
    _C.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.ENABLED = True
    _C.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.MOMENTUM = 0.9  # weight of the old statistics
    _C.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.BETA_MAX = 0.11  # also the initial running mean
    _C.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.BETA_MIN = 1e-3
