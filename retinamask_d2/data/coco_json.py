"""Register a COCO-format json plus an image folder as a detectron2 dataset, checked first.

detectron2's ``load_coco_json`` does the loading. Before it runs, every image and annotation of
the json is checked, because ``load_coco_json`` and the data loader either accept bad input
silently (an annotation whose polygons all have fewer than 3 points just disappears, a zero-area
box trains nothing) or fail much later without saying where (a missing image stops training at a
random iteration; an unknown category id gives a ``KeyError`` with no file or annotation).

What can be skipped without changing the meaning of the rest is skipped, counted and logged with
the annotation ids: polygon parts with fewer than 3 points (the whole annotation when no part is
left), zero-area boxes, boxes entirely outside their image, annotations of images the json does
not list, annotations without a mask when others have one. Boxes partly outside their image are
kept (the data loader clips them) and counted. Everything else stops with a
:class:`CocoJsonError` naming the file and the image or annotation: unknown category ids, missing
image files, images without a size, duplicate ids, malformed boxes, polygon coordinates that are
not finite numbers, come in an odd count or lie beyond 10 image sizes (pycocotools would
rasterise such a polygon at its own extent, gigabytes), RLE masks whose size is not the image's
or whose counts do not cover it exactly (pycocotools decodes them without bounds checks).
Every image file's header is read (format, size, EXIF orientation, no pixels decoded) and all
files that disagree with the json are listed in one error.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from retinamask_d2.data.image_io import ImageReadError, read_header

logger = logging.getLogger(__name__)

# Reasons an annotation is skipped, as the log names them.
TOO_FEW_POINTS = "no polygon with 3 or more points"
ZERO_AREA = "zero-area box"
OUTSIDE = "box entirely outside its image"
UNKNOWN_IMAGE = "image id not in 'images'"
NO_MASK = "no segmentation while other annotations have one"
MAX_IDS_SHOWN = 10
MAX_IMAGES_LISTED = 50  # image problems in the error message; the log has them all
MIN_POLYGON_COORDS = 6  # 3 points
COORDINATE_BOUND = 10  # box and polygon coordinates may reach this many image sizes from the origin
MAX_IMAGE_SIDE = 1 << 16


_CHECKED_DATASETS: set[str] = set()


class CocoJsonError(ValueError):
    """A COCO-format dataset that cannot be used as it is; the message says where and why."""


@dataclass
class CheckReport:
    """What :func:`check_coco_json` found in a json that can be used."""

    skipped: dict[str, list] = field(default_factory=dict)  # reason -> annotation ids
    clipped: list = field(default_factory=list)  # ids of boxes partly outside their image
    dropped_parts: list = field(default_factory=list)  # ids that lost a polygon part (< 3 points)
    has_masks: bool = False  # some annotation has a segmentation
    has_rle: bool = False  # some uncrowded annotation stores its mask as RLE
    usable: int = 0  # kept annotations with iscrowd 0: what training learns from
    crowd: int = 0  # kept annotations with iscrowd 1
    total: int = 0  # annotations in the json


def register_coco_json(
    name: str,
    json_file: str,
    image_root: str,
    missing_hint: str = "",
    read_categories: bool = True,
) -> None:
    """Register ``name`` as the checked COCO-format dataset of ``json_file`` and ``image_root``.

    Like detectron2's ``register_coco_instances`` (same metadata, so ``COCOEvaluator`` finds the
    json), but loading goes through :func:`load_checked_coco_json`, once per process.
    ``missing_hint`` ends the error raised when the json does not exist (e.g. how to make it).
    With ``read_categories``, an existing json's class names and category ids are set in the
    metadata now (:func:`category_metadata`); a caller that knows them passes False and sets them.
    """
    if name in DatasetCatalog.list():
        known = MetadataCatalog.get(name)
        if (known.get("json_file"), known.get("image_root")) == (json_file, image_root):
            return
        raise CocoJsonError(
            f"dataset name {name!r} is already registered (json {known.get('json_file')!r}); "
            f"choose another name for {json_file!r}"
        )
    cache: list[list[dict]] = []

    def load() -> list[dict]:
        if not os.path.isfile(json_file):
            raise CocoJsonError(f"{json_file}: no such file (dataset {name!r}){missing_hint}")
        if not cache:
            cache.append(load_checked_coco_json(json_file, image_root, name))
        return cache[0]

    DatasetCatalog.register(name, load)
    _CHECKED_DATASETS.add(name)
    metadata = MetadataCatalog.get(name)
    metadata.set(json_file=json_file, image_root=image_root, evaluator_type="coco")
    if read_categories and os.path.isfile(json_file):
        metadata.set(**category_metadata(json_file))


def category_metadata(json_file: str) -> dict[str, Any]:
    """``thing_classes`` and ``thing_dataset_id_to_contiguous_id`` of a COCO json's categories,
    in the order detectron2's ``load_coco_json`` gives them (sorted by id), so that a dataset's
    class names are known from its registration on, before it is loaded."""
    data = _read_json(json_file)
    if not isinstance(data.get("categories"), list):
        raise CocoJsonError(f"{json_file}: no 'categories' list; is this a COCO instances json?")
    categories = _category_names(json_file, data["categories"])
    ids = sorted(categories)
    return {
        "thing_classes": [categories[i] for i in ids],
        "thing_dataset_id_to_contiguous_id": {dataset_id: i for i, dataset_id in enumerate(ids)},
    }


def is_checked_coco_json(name: str) -> bool:
    """Whether ``name`` was registered by :func:`register_coco_json` (loads are checked)."""
    return name in _CHECKED_DATASETS and name in DatasetCatalog.list()


def load_checked_coco_json(json_file: str, image_root: str, dataset_name: str) -> list[dict]:
    """Check the json (see the module docstring), then load it with detectron2's loader.

    Returns detectron2's dataset dicts without the skipped annotations; each annotation keeps
    its json ``id``. Sets the metadata ``has_masks`` and ``has_rle_masks`` (polygon-only mask
    handling cannot read RLE) for the checks of :mod:`retinamask_d2.data.config`.
    """
    report = check_coco_json(json_file, image_root)
    # load_coco_json itself drops polygon parts with fewer than 3 points; the log says so below.
    dicts = load_coco_json(json_file, image_root, dataset_name, extra_annotation_keys=["id"])
    skipped_ids = {ann_id for ids in report.skipped.values() for ann_id in ids}
    for record in dicts:
        record["annotations"] = [a for a in record["annotations"] if a["id"] not in skipped_ids]
    MetadataCatalog.get(dataset_name).set(
        has_masks=report.has_masks,
        has_rle_masks=report.has_rle,
        no_training_annotations=no_training_annotations(json_file, report),
    )
    for reason, ids in report.skipped.items():
        logger.warning(f"{json_file}: skipped {len(ids)} annotation(s), {reason}: ids {_some(ids)}")
    if report.dropped_parts:
        logger.warning(
            f"{json_file}: dropped polygon parts with fewer than 3 points from "
            f"{len(report.dropped_parts)} annotation(s): ids {_some(report.dropped_parts)}"
        )
    if report.clipped:
        logger.info(
            f"{json_file}: {len(report.clipped)} box(es) partly outside their image are clipped "
            f"to it: ids {_some(report.clipped)}"
        )
    return dicts


def check_coco_json(json_file: str, image_root: str) -> CheckReport:
    """Check a COCO instances json against its image folder; raise :class:`CocoJsonError` for
    what cannot be skipped."""
    data = _read_json(json_file)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoJsonError(f"{json_file}: no {key!r} list; is this a COCO instances json?")
    if not data["categories"]:
        raise CocoJsonError(f"{json_file}: 'categories' is empty")
    category_ids = set(_category_names(json_file, data["categories"]))
    images = _check_images(json_file, image_root, data["images"])

    skipped: dict[str, list] = defaultdict(list)
    annotations = data["annotations"]
    for position, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise CocoJsonError(
                f"{json_file}: annotation {position} of 'annotations' is not an object: "
                f"{str(ann)[:60]}"
            )
    report = CheckReport(has_masks=any(a.get("segmentation") for a in annotations))
    ann_ids = Counter(_hashable(a.get("id")) for a in annotations)
    for ann in annotations:
        ann_id = ann.get("id")
        where = f"{json_file}: annotation id {ann_id}"
        if not _is_int(ann_id):
            raise CocoJsonError(f"{where}: 'id' must be an integer")
        if ann_ids[ann_id] > 1:
            raise CocoJsonError(f"{where}: {ann_ids[ann_id]} annotations share this id")
        for key in ("image_id", "category_id"):
            if not _is_int(ann.get(key)):
                raise CocoJsonError(f"{where}: {key!r} must be an integer, got {ann.get(key)!r}")
        image = images.get(ann["image_id"])
        if image is not None:
            where += f" (image id {image['id']}, {image['file_name']!r})"
        if ann["category_id"] not in category_ids:
            raise CocoJsonError(
                f"{where}: category_id {ann.get('category_id')!r} is not among the ids of "
                f"'categories' ({sorted(category_ids)})"
            )
        if image is None:
            skipped[UNKNOWN_IMAGE].append(ann_id)
            continue
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):  # True/False compare equal to 1/0 and are accepted
            raise CocoJsonError(f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
        box = ann.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)):
            raise CocoJsonError(
                f"{where}: 'bbox' must be 4 finite numbers [x, y, w, h], got {box!r}"
            )
        x, y, w, h = box
        width, height = image["width"], image["height"]
        if (
            max(abs(x), abs(w)) > COORDINATE_BOUND * width
            or max(abs(y), abs(h)) > COORDINATE_BOUND * height
        ):
            raise CocoJsonError(
                f"{where}: 'bbox' {box} reaches beyond {COORDINATE_BOUND}x the image's "
                f"{width}x{height}"
            )
        if w <= 0 or h <= 0:
            skipped[ZERO_AREA].append(ann_id)
            continue
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            skipped[OUTSIDE].append(ann_id)
            continue
        if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
            report.clipped.append(ann_id)
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, dict):
            _check_rle(where, segmentation, height, width)
            report.has_rle = report.has_rle or not crowd
        elif isinstance(segmentation, list) and segmentation:
            if not all(isinstance(p, list) for p in segmentation):
                raise CocoJsonError(
                    f"{where}: polygon 'segmentation' must be a list of lists [[x1, y1, x2, y2, "
                    f"...], ...], got {str(segmentation)[:60]}"
                )
            for polygon in segmentation:
                _check_polygon(where, polygon, height, width)
            enough = [len(p) >= MIN_POLYGON_COORDS for p in segmentation]
            if not any(enough):
                skipped[TOO_FEW_POINTS].append(ann_id)
                continue
            if not all(enough):
                report.dropped_parts.append(ann_id)
        elif segmentation:
            raise CocoJsonError(f"{where}: 'segmentation' is neither polygons nor an RLE dict")
        elif report.has_masks:
            skipped[NO_MASK].append(ann_id)
            continue
        if crowd:
            report.crowd += 1
        else:
            report.usable += 1
    report.skipped = dict(skipped)
    report.total = len(annotations)
    return report


def no_training_annotations(json_file: str, report: CheckReport) -> str:
    """Why a json that passed the check has nothing to train on, or "" when it has."""
    if report.usable:
        return ""
    if not report.total:
        return f"{json_file}: 'annotations' is empty; there is nothing to train on"
    parts = [f"{len(ids)} skipped ({reason})" for reason, ids in report.skipped.items()]
    if report.crowd:
        parts.append(f"{report.crowd} crowd (iscrowd 1, which training ignores)")
    return (
        f"{json_file}: none of its {report.total} annotation(s) can train: {', '.join(parts)}; "
        "give at least one annotation with iscrowd 0, a box and (with masks) a segmentation"
    )


def _category_names(json_file: str, categories: list) -> dict[int, str]:
    names: dict[int, str] = {}
    for category in categories:
        if not (isinstance(category, dict) and _is_int(category.get("id"))):
            raise CocoJsonError(
                f"{json_file}: 'categories' must be objects with an integer 'id' and a 'name', "
                f"got {str(category)[:60]}"
            )
        if category["id"] in names:
            raise CocoJsonError(f"{json_file}: category id {category['id']} appears twice")
        if not (isinstance(category.get("name"), str) and category["name"]):
            raise CocoJsonError(
                f"{json_file}: category id {category['id']}: 'name' must be a non-empty string, "
                f"got {category.get('name')!r}"
            )
        same = [i for i, name in names.items() if name == category["name"]]
        if same:
            raise CocoJsonError(
                f"{json_file}: category ids {same[0]} and {category['id']} are both named "
                f"{category['name']!r}; class names must be unique (merge them, or rename one)"
            )
        names[category["id"]] = category["name"]
    return names


def _read_json(json_file: str) -> dict[str, Any]:
    try:
        with open(json_file) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise CocoJsonError(f"{json_file}: no such file") from None
    except json.JSONDecodeError as e:
        raise CocoJsonError(f"{json_file}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise CocoJsonError(f"{json_file}: expected a JSON object at the top level")
    return data


def _check_images(json_file: str, image_root: str, images: list) -> dict[Any, dict]:
    """The json's images by id, after checking each entry and the header of each file (format,
    size against the json's, EXIF orientation); every failing file is listed at once."""
    by_id: dict[Any, dict] = {}
    missing, bad = [], []
    for image in images:
        if not isinstance(image, dict):
            raise CocoJsonError(f"{json_file}: an entry of 'images' is not an object: {image!r}")
        for key in ("id", "file_name", "width", "height"):
            if key not in image:
                raise CocoJsonError(f"{json_file}: image {image.get('id', image)!r} has no {key!r}")
        where = f"{json_file}: image id {image['id']}"
        if not _is_int(image["id"]):
            raise CocoJsonError(f"{where}: 'id' must be an integer")
        if image["id"] in by_id:
            raise CocoJsonError(
                f"{where}: {image['file_name']!r} and {by_id[image['id']]['file_name']!r} share "
                "this id; image ids must be unique"
            )
        by_id[image["id"]] = image
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            raise CocoJsonError(f"{where}: 'file_name' must be a non-empty string")
        for key in ("width", "height"):
            if not (_is_int(image[key]) and 0 < image[key] <= MAX_IMAGE_SIDE):
                raise CocoJsonError(
                    f"{where} ({image['file_name']!r}): {key!r} must be an integer in "
                    f"1..{MAX_IMAGE_SIDE}, got {image[key]!r}"
                )
        path = os.path.join(image_root, image["file_name"])
        if not os.path.isfile(path):
            missing.append(image)
            continue
        problem = _header_problem(path, image)
        if problem:
            bad.append(f"image id {image['id']}: {problem}")
    if missing:
        first = missing[0]
        raise CocoJsonError(
            f"{json_file}: {len(missing)} of {len(images)} image files are missing under "
            f"{image_root!r}, e.g. image id {first['id']}: "
            f"{os.path.join(image_root, first['file_name'])!r}; is the image folder right?"
        )
    if bad:
        for line in bad:
            logger.error(f"{json_file}: {line}")
        shown = "\n  ".join(bad[:MAX_IMAGES_LISTED])
        more = (
            f"\n  and {len(bad) - MAX_IMAGES_LISTED} more (all in the log)"
            if len(bad) > MAX_IMAGES_LISTED
            else ""
        )
        raise CocoJsonError(
            f"{json_file}: {len(bad)} of {len(images)} image files cannot be used as the json "
            f"describes them; fix or remove them:\n  {shown}{more}"
        )
    return by_id


def _header_problem(path: str, image: dict) -> str:
    """What is wrong with an image file judged from its header, or "" (see ``read_header``)."""
    try:
        header = read_header(path)
    except ImageReadError as e:
        return str(e)
    expected = (image["width"], image["height"])
    if header.size == expected:
        return ""
    shown = f"{path}: the file is {header.size[0]}x{header.size[1]}"
    if header.stored_size == expected:
        return (
            f"{shown} after its EXIF rotation (orientation {header.orientation}), stored "
            f"{expected[0]}x{expected[1]} as the json says; give the rotated size in the json "
            "(training reads images rotated), or save the image without the EXIF orientation"
        )
    return f"{shown}, the json says {expected[0]}x{expected[1]}"


def _check_rle(where: str, rle: dict, height: int, width: int) -> None:
    if "counts" not in rle or "size" not in rle:
        raise CocoJsonError(f"{where}: an RLE 'segmentation' needs 'size' and 'counts'")
    if rle["size"] != [height, width]:
        raise CocoJsonError(
            f"{where}: RLE size {rle['size']!r} is not the image's [height, width] "
            f"[{height}, {width}]"
        )
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _decode_rle_string(where, counts)
    elif not (isinstance(counts, list) and all(_is_int(c) and c >= 0 for c in counts)):
        raise CocoJsonError(
            f"{where}: RLE 'counts' must be a string (compressed) or a list of non-negative "
            f"integers, got {str(counts)[:60]}"
        )
    if sum(counts) != height * width:
        raise CocoJsonError(
            f"{where}: RLE 'counts' cover {sum(counts)} pixels, the image has "
            f"{height} x {width} = {height * width}"
        )


def _decode_rle_string(where: str, text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString`` format:
    5 bits per character, offset 48, continuation bit 0x20, runs after the second one stored as
    differences). pycocotools decodes without bounds checks, so a malformed string is refused
    here instead of being handed to it."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise CocoJsonError(f"{where}: RLE 'counts' string ends inside a number")
            code = ord(text[position]) - 48
            if not 0 <= code < 64:
                raise CocoJsonError(
                    f"{where}: RLE 'counts' has the invalid character {text[position]!r}"
                )
            value |= (code & 0x1F) << (5 * shift)
            more = bool(code & 0x20)
            position += 1
            shift += 1
            if not more and code & 0x10:
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise CocoJsonError(f"{where}: RLE 'counts' decodes to a negative run length")
        counts.append(value)
    return counts


def _check_polygon(where: str, polygon: list, height: int, width: int) -> None:
    """Coordinates must be finite numbers, an even count, within ``COORDINATE_BOUND`` image sizes
    (pycocotools rasterises a polygon at its own extent: a huge or NaN coordinate costs
    gigabytes, not an error)."""
    if not all(_finite(v) for v in polygon):
        bad = next(v for v in polygon if not _finite(v))
        raise CocoJsonError(f"{where}: polygon coordinates must be finite numbers, got {bad!r}")
    if len(polygon) % 2:
        raise CocoJsonError(
            f"{where}: a polygon has an odd number of coordinates ({len(polygon)}); it must be "
            "x, y pairs"
        )
    xs, ys = polygon[0::2], polygon[1::2]
    if xs and (
        max(abs(v) for v in xs) > COORDINATE_BOUND * width
        or max(abs(v) for v in ys) > COORDINATE_BOUND * height
    ):
        raise CocoJsonError(
            f"{where}: polygon coordinates span x {min(xs)}..{max(xs)}, y {min(ys)}..{max(ys)}, "
            f"beyond {COORDINATE_BOUND}x the image's {width}x{height}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (int, str, float, type(None))) else repr(value)


def _some(ids: list) -> str:
    shown = ", ".join(str(i) for i in ids[:MAX_IDS_SHOWN])
    return shown + (f" and {len(ids) - MAX_IDS_SHOWN} more" if len(ids) > MAX_IDS_SHOWN else "")
