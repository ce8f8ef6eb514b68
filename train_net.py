#!/usr/bin/env python
"""Train or evaluate RetinaMask (or any detectron2 model) with detectron2's trainer.

    python train_net.py --config-file configs/retinamask_R50_FPN.yaml --num-gpus 8
    python train_net.py --config-file CONFIG --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file CONFIG --resume            # continue in OUTPUT_DIR
    python train_net.py --config-file CONFIG --train-json train.json --train-images imgs/ \\
        --test-json val.json --test-images imgs/                 # a COCO-format dataset

Without a GPU, the model runs on the CPU and ``--num-gpus N`` starts N CPU processes (GLOO).
"""

import logging

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from retinamask_d2 import add_retinamask_config
from retinamask_d2.data.config import (
    add_dataset_arguments,
    add_dataset_config,
    dataset_options,
    setup_datasets,
)
from retinamask_d2.engine import Trainer


def setup(args):
    """The config of ``args``, fitted to its datasets, frozen; logging and seeding set up."""
    cfg = get_cfg()
    add_retinamask_config(cfg)
    add_dataset_config(cfg)
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


def main(args):
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


def argument_parser():
    parser = default_argument_parser()
    add_dataset_arguments(parser)
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
