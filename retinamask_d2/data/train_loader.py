"""The training data loader of :class:`retinamask_d2.engine.Trainer`: deterministic, resumable.

It reuses detectron2's dataset dicts (``get_detection_dataset_dicts``), storage
(``DatasetFromList``) and ``DatasetMapper``; what it replaces is the sampling (see
:mod:`retinamask_d2.data.samplers` for why) and the RNG of the mapper, which is seeded per
sample, so augmentations depend on (seed, iteration, position) only, not on how many workers
load the data or where a run was resumed.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetFromList, DatasetMapper, get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset

from .samplers import IterationBatchSampler

logger = logging.getLogger(__name__)
MAPPER_RETRIES = 3


@contextlib.contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seed Python's, NumPy's and torch's global RNGs for the block, then restore their state."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


class SeededMapDataset(Dataset):
    """``mapper(dataset[index])`` for items ``(index, seed)``, with the RNGs seeded by ``seed``.

    A mapper may return None for an image it cannot use (detectron2's ``MapDataset`` convention);
    another index, drawn from ``seed``, is tried then.
    """

    def __init__(self, dataset: Dataset, mapper: Callable[[dict], dict | None]):
        self.dataset = dataset
        self.mapper = mapper

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        index, seed = item
        fallback = random.Random(seed)
        for _ in range(MAPPER_RETRIES + 1):
            with seeded_rngs(seed):
                mapped = self.mapper(self.dataset[index])
            if mapped is not None:
                return mapped
            logger.warning(f"the data mapper returned None for dataset index {index}; skipping it")
            index = fallback.randrange(len(self.dataset))
        raise RuntimeError(f"the data mapper returned None {MAPPER_RETRIES + 1} times in a row")


class ResumableTrainLoader:
    """An endless iterable of this rank's training batches (lists of mapped dicts).

    ``start_iter`` and ``batch_sampler.seed`` are read when iteration actually begins (the first
    ``next``), so a trainer can set them after loading a checkpoint even though detectron2's
    ``SimpleTrainer`` calls ``iter()`` on the loader when it is built.
    """

    def __init__(
        self, dataset: SeededMapDataset, batch_sampler: IterationBatchSampler, workers: int
    ):
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.num_workers = workers
        self.start_iter = 0

    def __iter__(self) -> Iterator[list[dict]]:
        self.batch_sampler.start_iter = self.start_iter
        # Its own generator: starting the loader must not draw from the global RNG the model uses.
        generator = torch.Generator()
        generator.manual_seed(self.batch_sampler.seed)
        yield from DataLoader(
            self.dataset,
            batch_sampler=self.batch_sampler,
            num_workers=self.num_workers,
            collate_fn=trivial_batch_collator,
            generator=generator,
        )


def run_seed(cfg: CfgNode) -> int:
    """``cfg.SEED``, or a random seed shared by all processes when that is < 0; every process
    must call this (the shared seed is agreed on collectively)."""
    return cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()


def build_resumable_train_loader(
    cfg: CfgNode, mapper: Callable[[dict], dict | None] | None = None, seed: int | None = None
) -> ResumableTrainLoader:
    """The loader of ``cfg.DATASETS.TRAIN``, like detectron2's ``build_detection_train_loader``
    with ``DATALOADER.SAMPLER_TRAIN`` TrainingSampler.

    ``seed`` defaults to ``cfg.SEED`` when that is >= 0, else to a random seed shared by all
    processes; every process must call this (the shared seed is agreed on collectively).
    """
    dataset_dicts = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN,
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE
        if cfg.MODEL.KEYPOINT_ON
        else 0,
        proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
    )
    if seed is None:
        seed = run_seed(cfg)
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        groups = [0 if d["width"] > d["height"] else 1 for d in dataset_dicts]
    else:
        groups = [0] * len(dataset_dicts)
    sampler = IterationBatchSampler(
        groups, cfg.SOLVER.IMS_PER_BATCH, seed, comm.get_rank(), comm.get_world_size()
    )
    dataset = SeededMapDataset(
        DatasetFromList(dataset_dicts, copy=False),
        mapper if mapper is not None else DatasetMapper(cfg, is_train=True),
    )
    return ResumableTrainLoader(dataset, sampler, cfg.DATALOADER.NUM_WORKERS)
