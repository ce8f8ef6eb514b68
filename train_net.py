#!/usr/bin/env python
"""Train or evaluate RetinaMask (or any detectron2 model) with detectron2's trainer.

    python train_net.py --config-file configs/retinamask_R50_FPN.yaml --num-gpus 8
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file CONFIG --resume            # continue in OUTPUT_DIR
    python train_net.py --config-file CONFIG --train-json train.json --train-images imgs/ \\
        --test-json val.json --test-images imgs/                 # a COCO-format dataset

Without a GPU, the model runs on the CPU and ``--num-gpus N`` starts N CPU processes (GLOO).
Problems with the command line, the config, the data or a checkpoint print one ``error:`` message
(the file, the id, what to do) and exit with code 2; other errors keep their traceback.
"""

import argparse
import os
import sys

import yaml
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from retinamask_d2 import add_retinamask_config
from retinamask_d2.checkpoint.checked import CheckedCheckpointer
from retinamask_d2.cli import (
    USAGE_EXIT_CODE,
    USER_ERRORS,
    UsageError,
    fall_back_to_cpu,
    require_weights,
    user_message,
)
from retinamask_d2.data.coco_json import CocoJsonError
from retinamask_d2.data.user_datasets import check_test_datasets, setup_datasets
from retinamask_d2.engine import Trainer
from retinamask_d2.evaluation.class_mapping import check_test_classes

# Names under which --train-json / --test-json register their datasets.
CLI_DATASET_NAMES = {"train": "coco_json_train", "test": "coco_json_test"}
# The name --eval-only writes its config under: the training run's config.yaml stays as it is.
EVAL_CONFIG_NAME = "config_eval.yaml"


def dataset_options(args: argparse.Namespace) -> list[str]:
    """Config overrides (``KEY VALUE`` list) that the dataset flags of ``args`` stand for.

    They come before the command line's own overrides, which therefore win.
    """
    triples, opts = [], []
    for split, name in CLI_DATASET_NAMES.items():
        json_file, image_root = getattr(args, f"{split}_json"), getattr(args, f"{split}_images")
        if (json_file is None) != (image_root is None):
            raise CocoJsonError(f"--{split}-json and --{split}-images must be given together")
        if json_file is not None:
            triples.append((name, os.path.abspath(json_file), os.path.abspath(image_root)))
            opts += [f"DATASETS.{split.upper()}", repr((name,))]
    return ["DATASETS.COCO_JSON", repr(tuple(triples)), *opts] if triples else []


def setup(args: argparse.Namespace):
    """The config of ``args``, fitted to its datasets, frozen; logging and seeding set up."""
    cfg = get_cfg()
    add_retinamask_config(cfg)
    if args.config_file and not os.path.isfile(args.config_file):
        raise UsageError(f"--config-file {args.config_file}: no such file")
    try:
        if args.config_file:
            cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(dataset_options(args) + (args.opts or []))
    except (KeyError, ValueError, AssertionError, TypeError, yaml.YAMLError) as e:
        if isinstance(e, CocoJsonError):
            raise
        source = " or ".join(filter(None, [args.config_file, "the command line's KEY VALUE"]))
        raise UsageError(f"bad config in {source}: {e}") from None
    _make_output_dir(cfg.OUTPUT_DIR)
    # Before the datasets are checked: what they skip is logged to OUTPUT_DIR/log.txt too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="retinamask_d2")
    if not args.eval_only:
        if not cfg.DATASETS.TRAIN:
            raise UsageError(
                "no training set: pass --train-json FILE --train-images DIR, or name datasets in "
                "DATASETS.TRAIN (or evaluate with --eval-only)"
            )
        if cfg.SOLVER.MAX_ITER < 1:
            raise UsageError(f"SOLVER.MAX_ITER must be at least 1, got {cfg.SOLVER.MAX_ITER}")
    setup_datasets(cfg, training=not args.eval_only)
    _check_annotation_files(cfg, training=not args.eval_only)
    check_test_datasets(cfg)
    check_test_classes(cfg)
    if args.eval_only:
        _check_eval_weights(cfg, args.resume)
    elif cfg.MODEL.WEIGHTS:  # empty: training from scratch
        require_weights(cfg)
    fall_back_to_cpu(cfg)
    cfg.freeze()
    _default_setup(cfg, args)
    return cfg


def _make_output_dir(output_dir: str) -> None:
    try:
        os.makedirs(output_dir, exist_ok=True)
    except OSError as e:
        what = "is a file" if os.path.isfile(output_dir) else f"cannot be made ({e.strerror})"
        raise UsageError(f"OUTPUT_DIR {output_dir}: {what}; name a folder") from None


def _default_setup(cfg, args: argparse.Namespace) -> None:
    """detectron2's ``default_setup``, which writes the config to OUTPUT_DIR/config.yaml; with
    ``--eval-only`` that file (a training run's config, often the one being evaluated) is kept
    and the evaluation's config goes to ``EVAL_CONFIG_NAME`` instead."""
    path = os.path.join(cfg.OUTPUT_DIR, "config.yaml")
    kept = None
    if args.eval_only and comm.is_main_process() and os.path.isfile(path):
        with open(path, "rb") as f:
            kept = f.read()
    default_setup(cfg, args)
    if not (args.eval_only and comm.is_main_process()) or not os.path.isfile(path):
        return
    os.replace(path, os.path.join(cfg.OUTPUT_DIR, EVAL_CONFIG_NAME))
    if kept is not None:
        with open(path, "wb") as f:
            f.write(kept)


def _check_annotation_files(cfg, training: bool) -> None:
    """A dataset whose registered annotation file is absent (COCO not downloaded, say) stops
    here with one line, not with a traceback when its loader is built."""
    splits = [("DATASETS.TRAIN", cfg.DATASETS.TRAIN)] if training else []
    for key, names in [*splits, ("DATASETS.TEST", cfg.DATASETS.TEST)]:
        for name in names:
            json_file = MetadataCatalog.get(name).get("json_file", None)
            if json_file and not os.path.isfile(json_file):
                raise UsageError(
                    f"{key} {name}: {json_file} not found; put the dataset there "
                    "($DETECTRON2_DATASETS moves the root; docs/GETTING_STARTED.md: Training on "
                    "COCO) or pass --train-json/--test-json"
                )


def _check_eval_weights(cfg, resume: bool) -> None:
    weights = cfg.MODEL.WEIGHTS
    if resume and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        return
    if not weights:
        raise UsageError(
            "--eval-only with an empty MODEL.WEIGHTS would evaluate an untrained model; pass "
            "MODEL.WEIGHTS path/to/model_final.pth"
        )
    require_weights(cfg)


def main(args: argparse.Namespace):
    """:func:`run`, with the errors in ``USER_ERRORS`` printed as one line and exit code 2."""
    try:
        return run(args)
    except USER_ERRORS as e:
        if comm.is_main_process():
            print(f"error: {user_message(e)}", file=sys.stderr)
        sys.exit(USAGE_EXIT_CODE)


def run(args: argparse.Namespace):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        checkpointer = CheckedCheckpointer(model, save_dir=cfg.OUTPUT_DIR, fit="inference")
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser() -> argparse.ArgumentParser:
    """detectron2's arguments plus the flags for a user's COCO-format train and test sets."""
    parser = default_argument_parser()
    group = parser.add_argument_group("a COCO-format dataset (json + image folder)")
    group.add_argument("--train-json", metavar="FILE", help="training annotations (COCO json)")
    group.add_argument("--train-images", metavar="DIR", help="folder of the training images")
    group.add_argument("--test-json", metavar="FILE", help="evaluation annotations (COCO json)")
    group.add_argument("--test-images", metavar="DIR", help="folder of the evaluation images")
    return parser


def launch_main(args: argparse.Namespace) -> None:
    """``launch(main)``; a process that stopped on a user error (exit code 2) ends the run with
    the same code, without the parent's traceback on top of the child's one-line message."""
    from torch.multiprocessing import ProcessExitedException

    try:
        launch(
            main,
            args.num_gpus,
            num_machines=args.num_machines,
            machine_rank=args.machine_rank,
            dist_url=args.dist_url,
            args=(args,),
        )
    except ProcessExitedException as e:
        if e.exit_code == USAGE_EXIT_CODE:
            sys.exit(USAGE_EXIT_CODE)
        raise


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch_main(args)
