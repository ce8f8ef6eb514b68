#!/usr/bin/env python
"""Compare objects by appearance: index the objects of images once, then search and group them.

    python demo/objects.py index --config-file output/config.yaml --input photos/ --index objects/
    python demo/objects.py search --index objects/ --image query.jpg --k 5
    python demo/objects.py search --index objects/ --id 3f2a9c01b7de:4 --class bar
    python demo/objects.py group --index objects/ --threshold 0.9

Each writes JSON (``--output``, default next to the index) and a gallery PNG of cut-outs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2

from retinamask_d2.cli import USAGE_EXIT_CODE, USER_ERRORS, fall_back_to_cpu, require_weights
from retinamask_d2.data.image_files import list_images
from retinamask_d2.predictor import RetinaMaskPredictor, load_config
from retinamask_d2.similarity.crops import CROP_MODES
from retinamask_d2.similarity.embedders import EMBEDDERS
from retinamask_d2.similarity.finder import ObjectFinder
from retinamask_d2.similarity.gallery import gallery
from retinamask_d2.similarity.index import ObjectIndex, file_sha256


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    index = verbs.add_parser("index", help="find, cut out and embed the objects of images")
    index.add_argument("--config-file", required=True, help="the model's config (config.yaml)")
    index.add_argument("--input", nargs="+", required=True, help="image files, folders, globs")
    index.add_argument("--index", required=True, help="folder of the index (made if missing)")
    index.add_argument("--embedder", choices=EMBEDDERS, default="handcrafted")
    index.add_argument("--crop", choices=CROP_MODES, default="upright", help="what is embedded")
    index.add_argument("--confidence-threshold", type=float, default=0.5)
    index.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE pairs")

    search = verbs.add_parser("search", help="the stored objects most like a query")
    search.add_argument("--index", required=True)
    query = search.add_mutually_exclusive_group(required=True)
    query.add_argument("--id", help="a stored object's id")
    query.add_argument("--image", help="an image: each of its objects is a query")
    search.add_argument("--k", type=int, default=10, help="results per query")
    search.add_argument("--class", dest="classes", nargs="+", help="only these class names")
    search.add_argument("--min-score", type=float, default=0.0, help="only detections above")
    search.add_argument("--faiss", action="store_true", help="search a FAISS index (faiss-cpu)")
    search.add_argument("--output", help="JSON of the results (default: INDEX/search.json)")

    group = verbs.add_parser("group", help="groups of near-duplicate objects")
    group.add_argument("--index", required=True)
    group.add_argument("--threshold", type=float, default=0.9, help="cosine similarity")
    group.add_argument("--any-class", action="store_true", help="group across classes")
    group.add_argument("--output", help="JSON of the groups (default: INDEX/groups.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return {"index": run_index, "search": run_search, "group": run_group}[args.verb](args)
    except (*USER_ERRORS, FileNotFoundError, ValueError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return USAGE_EXIT_CODE


def _finder(config_file: str, opts: list, embedder: str, crop: str, threshold: float):
    if embedder == "maskpool":  # the model returns the embeddings with its instances
        opts = [*opts, "MODEL.RETINAMASK.TEST_EMBEDDINGS", "True"]
    cfg = load_config(config_file, opts=opts)
    fall_back_to_cpu(cfg)
    require_weights(cfg, config_file)
    predictor = RetinaMaskPredictor(cfg, confidence_threshold=threshold)
    return ObjectFinder(predictor, embedder, crop), cfg


def run_index(args: argparse.Namespace) -> int:
    finder, cfg = _finder(
        args.config_file, args.opts, args.embedder, args.crop, args.confidence_threshold
    )
    weights = cfg.MODEL.WEIGHTS
    recorded = {
        "config_file": str(Path(args.config_file).resolve()),
        "opts": list(args.opts),
        "weights": weights,
        "weights_sha256": file_sha256(weights) if Path(weights).is_file() else None,
        "confidence_threshold": args.confidence_threshold,
    }
    listing = list_images(args.input)
    index, report = finder.index(args.index, listing.paths, **recorded)
    failed = listing.problems + [f"{path}: {reason}" for path, reason in report.failed.items()]
    for problem in failed:
        print(f"skipped {problem}", file=sys.stderr)
    print(
        f"{len(report.indexed)} image(s) indexed ({report.objects} object(s)), "
        f"{len(report.unchanged)} unchanged, {len(failed)} skipped; "
        f"{len(index.objects)} object(s) in {args.index}"
    )
    return 1 if failed else 0


def run_search(args: argparse.Namespace) -> int:
    index = ObjectIndex.open(args.index)
    filters = {"classes": args.classes, "min_score": args.min_score}
    if args.id is not None:
        obj, vector = index.get(args.id)
        queries = [(obj, index.search(vector, args.k, use_faiss=args.faiss, **filters))]
    else:
        meta = index.meta
        finder, _ = _finder(
            meta["config_file"],
            meta["opts"],
            meta["embedder"],
            meta["crop_mode"],
            meta["confidence_threshold"],
        )
        queries = [
            ({"image": str(Path(args.image).resolve()), "position": i}, hits)
            for i, hits in finder.search_image(index, args.image, args.k, **filters)
        ]
    results = [
        {"query": q, "hits": [{"similarity": h.similarity, **h.object} for h in hits]}
        for q, hits in queries
    ]
    output = Path(args.output or Path(args.index) / "search.json")
    output.write_text(json.dumps(results, indent=1))
    rows = [
        ([(q, "query")] if "cutout" in q else [])
        + [(h.object, f"{h.similarity:.3f} {h.object['class']}") for h in hits]
        for q, hits in queries
    ]
    rows = [r for r in rows if r]
    if rows:
        cv2.imwrite(str(output.with_suffix(".png")), gallery(Path(args.index), rows))
    print(f"{len(results)} query object(s); results in {output} and {output.with_suffix('.png')}")
    return 0


def run_group(args: argparse.Namespace) -> int:
    index = ObjectIndex.open(args.index)
    groups = index.group(args.threshold, same_class=not args.any_class)
    output = Path(args.output or Path(args.index) / "groups.json")
    output.write_text(json.dumps([[index.objects[i]["id"] for i in g] for g in groups], indent=1))
    for number, members in enumerate(groups):
        row = [(index.objects[i], index.objects[i]["class"]) for i in members]
        picture = output.with_name(f"{output.stem}_{number:03d}.png")
        cv2.imwrite(str(picture), gallery(Path(args.index), [row]))
    print(f"{len(groups)} group(s) at similarity >= {args.threshold}; ids in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
