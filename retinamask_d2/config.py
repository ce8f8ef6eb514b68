"""Config keys of RetinaMask: the project's only config function.

RetinaMask reuses detectron2's existing nodes wherever one fits (``MODEL.RETINANET`` for the box
branch and its one class count, ``MODEL.ROI_MASK_HEAD`` for the mask head and its RoIAlign) and
adds only what has no home there under ``MODEL.RETINAMASK``, plus ``DATASETS.COCO_JSON`` for
users' datasets. Defaults of the new keys are the paper's values, except ``DROP_UNMASKED`` (see
below); the paper's recipe for the existing keys lives in ``configs/Base-RetinaMask.yaml``.
Any ``config.yaml`` that ``train_net.py`` writes loads with ``get_cfg()`` and this function.
"""

from detectron2.config import CfgNode as CN

from retinamask_d2.data.image_io import DEFAULT_MAX_MEGAPIXELS, DEFAULT_MIN_SIDE


def add_retinamask_config(cfg: CN) -> None:
    """Add the keys of RetinaMask to ``cfg`` (in place), like detectron2's ``add_*_config``."""
    _C = cfg

    # Users' COCO-format datasets: (name, json_file, image_root) triples, registered (and checked)
    # before training or evaluation so that DATASETS.TRAIN / TEST can name them.
    _C.DATASETS.COCO_JSON = ()

    # The image sizes training, evaluation, the predictor and the demo accept (checked from the
    # file headers before training): at most MAX_IMAGE_MEGAPIXELS (0: no limit), at least
    # MIN_IMAGE_SIDE pixels on each side, as stored and after the resize of INPUT.MIN_SIZE_* /
    # MAX_SIZE_*. Not downscaled: results stay in the file's pixel coordinates.
    _C.INPUT.MAX_IMAGE_MEGAPIXELS = DEFAULT_MAX_MEGAPIXELS
    _C.INPUT.MIN_IMAGE_SIDE = DEFAULT_MIN_SIDE

    _C.MODEL.RETINAMASK = CN()
    # FPN levels the mask branch pools from (paper: P3-P5, scales 1/8-1/32).
    _C.MODEL.RETINAMASK.MASK_IN_FEATURES = ["p3", "p4", "p5"]
    # Level assignment k = floor(k0 + log2(sqrt(w * h) / CANONICAL_BOX_SIZE)), k0 = CANONICAL_LEVEL,
    # clamped to the levels of MASK_IN_FEATURES (paper and FPN paper: 224 and 4).
    _C.MODEL.RETINAMASK.CANONICAL_BOX_SIZE = 224
    _C.MODEL.RETINAMASK.CANONICAL_LEVEL = 4
    # Training RoIs of an image: its top TRAIN_TOPK post-NMS detections (chosen without gradient)
    # plus all its GT boxes (paper: 100). The detections are decoded with their own settings, so
    # that test-time keys (MODEL.RETINANET.*_TEST, TEST.DETECTIONS_PER_IMAGE) do not change
    # training; the official code decodes them with its test settings, the values below.
    _C.MODEL.RETINAMASK.TRAIN_TOPK = 100
    _C.MODEL.RETINAMASK.TRAIN_SCORE_THRESH = 0.05  # class score a training RoI needs
    _C.MODEL.RETINAMASK.TRAIN_TOPK_CANDIDATES = 1000  # per FPN level, before NMS
    _C.MODEL.RETINAMASK.TRAIN_NMS_THRESH = 0.4  # per-class box NMS among the candidates
    # An RoI whose IoU with a GT box is >= POSITIVE_IOU trains the mask head (paper: 0.5).
    _C.MODEL.RETINAMASK.POSITIVE_IOU = 0.5
    # Weight of loss_mask in the total loss (paper: 1).
    _C.MODEL.RETINAMASK.MASK_LOSS_WEIGHT = 1.0
    # Weight of loss_mask_dice, a Dice term next to loss_mask (not in the paper; 0 leaves it
    # out). It makes thin objects' own pixels count whatever share of their box they fill.
    _C.MODEL.RETINAMASK.MASK_DICE_WEIGHT = 0.0
    # Each detection's mask is predicted, learned and pasted over its box scaled by this about its
    # centre (not in the paper; 1 is the box itself). Above 1 the mask can reach past a box that
    # cuts its object short, as boxes of long thin objects often do; the boxes returned are the
    # detector's own.
    _C.MODEL.RETINAMASK.MASK_BOX_SCALE = 1.0
    # What each detection's mask is pooled, learned and pasted in (not in the paper): "box", its
    # (MASK_BOX_SCALE-scaled) box; "oriented", a rotated rectangle ("frame") that a small head
    # regresses from the box's features, trained on the rectangle fitted to the GT mask, so
    # that a thin tilted object fills the mask grid instead of crossing it as a thin diagonal.
    # Near-square objects keep their box. Not measured yet against "box": "box" stays default.
    _C.MODEL.RETINAMASK.MASK_ROI = "box"
    # At test time, also return each masked detection's appearance embedding ``pred_embeddings``
    # (N, C): the mask branch's pooled RoI features averaged under its predicted mask
    # ("maskpool", unit length; zeros for detections without a mask). It reuses the features the
    # masks were predicted from, so it costs one weighted sum. Eager inference only.
    _C.MODEL.RETINAMASK.TEST_EMBEDDINGS = False
    _C.MODEL.RETINAMASK.ORIENTED = CN()
    # An object whose rectangle is shorter than MIN_ELONGATION times its width keeps its box.
    _C.MODEL.RETINAMASK.ORIENTED.MIN_ELONGATION = 2.0
    # The predicted rectangle is grown by LENGTH_PAD along its length and by WIDTH_PAD across
    # it, but to at least MIN_WIDTH_RATIO of its padded length across, so that an error of the
    # predicted angle (up to asin(MIN_WIDTH_RATIO * LENGTH_PAD), 7 deg) cannot cut the ends off.
    _C.MODEL.RETINAMASK.ORIENTED.LENGTH_PAD = 1.2
    _C.MODEL.RETINAMASK.ORIENTED.WIDTH_PAD = 1.5
    _C.MODEL.RETINAMASK.ORIENTED.MIN_WIDTH_RATIO = 0.1
    # Channels of the frame head's two convs; weight of its loss_mask_frame.
    _C.MODEL.RETINAMASK.ORIENTED.HEAD_CONV_DIM = 64
    _C.MODEL.RETINAMASK.ORIENTED.LOSS_WEIGHT = 1.0
    # At test time the TEST_TOPK_MASKS highest-scoring detections get masks (paper: 50);
    # 0 gives box-only inference (no pred_masks, no mask branch cost).
    _C.MODEL.RETINAMASK.TEST_TOPK_MASKS = 50
    # Of those, only detections scoring at least TEST_MASK_SCORE_THRESH get masks (the others are
    # treated like detections beyond TEST_TOPK_MASKS). 0 keeps the paper's top-50, what COCO
    # evaluation needs; the predictor and the demo set it to their confidence threshold, so that
    # no mask is computed for a detection they drop.
    _C.MODEL.RETINAMASK.TEST_MASK_SCORE_THRESH = 0.0
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
    # Adaptive anchor assignment (ATSS, Zhang et al. 2020) instead of RetinaNet's fixed IoU
    # thresholds (not in the paper; off: MODEL.RETINANET.IOU_THRESHOLDS as before). Per object,
    # the TOPK anchor locations of each level nearest to its centre (all their anchors) are
    # candidates; those whose IoU reaches the mean + standard deviation of the candidates' IoUs
    # and whose centre lies in the object's box (widened to the level's stride) are positive,
    # all others negative. A 200 x 6 bar, whose best anchor has IoU 0.24, gets real positives.
    _C.MODEL.RETINAMASK.ATSS = CN()
    _C.MODEL.RETINAMASK.ATSS.ENABLED = False
    _C.MODEL.RETINAMASK.ATSS.TOPK = 9
    # With MODEL.FPN.NORM set, give the FPN's lateral and output convs a bias before their norm,
    # as the official GN models have (detectron2's FPN drops it). Not redundant under GN: a
    # per-channel shift changes the statistics of its group.
    _C.MODEL.RETINAMASK.FPN_NORM_CONV_BIAS = False

    # Test-time duplicate removal that keeps crossing objects (off: box NMS only, as before).
    # Box NMS runs at the loose MASK_NMS.BOX_THRESH instead of RETINANET.NMS_THRESH_TEST; the top
    # MASK_NMS.PRE_TOPK detections (instead of TEST_TOPK_MASKS) get masks and are suppressed by
    # their mask IoU (> MASK_NMS.THRESH), computed on the masks pasted at the output size: two
    # crossing bars share a box but not a mask. A pair where a mask is empty, and detections
    # beyond PRE_TOPK, keep box NMS at RETINANET.NMS_THRESH_TEST; TEST.DETECTIONS_PER_IMAGE
    # applies after all of it (so that duplicates do not take the places of other objects).
    _C.MODEL.RETINAMASK.MASK_NMS = CN()
    _C.MODEL.RETINAMASK.MASK_NMS.ENABLED = False
    _C.MODEL.RETINAMASK.MASK_NMS.BOX_THRESH = 0.9
    _C.MODEL.RETINAMASK.MASK_NMS.THRESH = 0.5
    _C.MODEL.RETINAMASK.MASK_NMS.PRE_TOPK = 100
    # Test-time NMS (box, and mask when on) across classes instead of within each class: one
    # object, one detection. Training RoIs keep their per-class NMS.
    _C.MODEL.RETINAMASK.CLASS_AGNOSTIC_NMS = False

    # Multiplies the smooth L1 loss_box_reg (fixed or self-adjusting beta). detectron2 divides the
    # box loss summed over the 4 coordinates by the number of positive anchors; the official code
    # divides it by 4x that number, i.e. it averages over the coordinates: 0.25 reproduces that
    # balance with the cls loss. IoU losses (giou, diou, ciou) have no 4 coordinates to average
    # over: with them, a value other than 1 is refused.
    _C.MODEL.RETINAMASK.BOX_REG_LOSS_WEIGHT = 0.25

    # Self-adjusting smooth L1 for box regression (paper section 3.3): beta per box coordinate is
    # clamp(running_mean - running_var, BETA_MIN, BETA_MAX) of |prediction - target| over the
    # positive anchors. When off, RETINANET.SMOOTH_L1_LOSS_BETA / BBOX_REG_LOSS_TYPE apply.
    _C.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1 = CN()
    _C.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.ENABLED = True
    _C.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.MOMENTUM = 0.9  # weight of the old statistics
    _C.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.BETA_MAX = 0.11  # also the initial running mean
    _C.MODEL.RETINAMASK.SELF_ADJUSTING_SMOOTH_L1.BETA_MIN = 1e-3

    # What the model's classes are, written by train_net.py from the training set (and read by
    # the predictor, the demo and --eval-only, so that they need no dataset json): the class
    # names in the model's order, and each class's category id in the training json.
    _C.MODEL.RETINAMASK.CLASS_NAMES = []
    _C.MODEL.RETINAMASK.DATASET_CATEGORY_IDS = []
    # Evaluating on a dataset whose class names (or their order) are not CLASS_NAMES is refused,
    # naming both lists; True maps the predictions to the dataset's classes by name instead.
    _C.MODEL.RETINAMASK.TEST_CLASSES_BY_NAME = False

    # The MobileNetV2 bottom-up network of build_retinamask_mobilenetv2_fpn_backbone (torchvision's
    # ``features``, width 1.0): its stages m2-m5 (strides 4-32) that feed MODEL.FPN.IN_FEATURES,
    # and the norm of its BatchNorms: "FrozenBN" keeps pretrained statistics (as detectron2 does
    # for ImageNet ResNets), "BN" / "SyncBN" train them. MODEL.BACKBONE.FREEZE_AT applies as for
    # ResNets.
    _C.MODEL.MOBILENETV2 = CN()
    _C.MODEL.MOBILENETV2.OUT_FEATURES = ["m2", "m3", "m4", "m5"]
    _C.MODEL.MOBILENETV2.NORM = "FrozenBN"
