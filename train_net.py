#!/usr/bin/env python
"""Train or evaluate RetinaMask (or any detectron2 model) with detectron2's trainer.

    python train_net.py --config-file configs/retinamask_R50_FPN.yaml --num-gpus 8
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file CONFIG --resume            # continue in OUTPUT_DIR
    python train_net.py --config-file CONFIG --train-json train.json --train-images imgs/ \\
        --test-json val.json --test-images imgs/                 # a COCO-format dataset

Without a GPU, the model runs on the CPU and ``--num-gpus N`` starts N CPU processes (GLOO).
"""

import argparse
import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from retinamask_d2 import add_retinamask_config
from retinamask_d2.data.coco_json import CocoJsonError
from retinamask_d2.data.user_datasets import setup_datasets
from retinamask_d2.engine import Trainer

# Names under which --train-json / --test-json register their datasets.
CLI_DATASET_NAMES = {"train": "coco_json_train", "test": "coco_json_test"}


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
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(dataset_options(args) + (args.opts or []))
    # Before the datasets are checked: what they skip is logged to OUTPUT_DIR/log.txt too.
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="retinamask_d2")
    setup_datasets(cfg, training=not args.eval_only)
    no_gpu = cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available()
    if no_gpu:
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    default_setup(cfg, args)
    if no_gpu:
        logging.getLogger("detectron2").warning("no GPU found: running on the CPU")
    return cfg


def main(args: argparse.Namespace):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
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


if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
