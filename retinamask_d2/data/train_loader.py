"""The training data loader of :class:`retinamask_d2.engine.Trainer`: deterministic, resumable.

It reuses detectron2's dataset dicts (``get_detection_dataset_dicts``), storage
(``DatasetFromList``) and ``DatasetMapper`` (reading with the project's image reader, see
:mod:`retinamask_d2.data.mapper`); what it replaces is the sampling (see
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
from detectron2.data import DatasetFromList, get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator
from detectron2.utils import comm
from torch.utils.data import DataLoader, Dataset

from retinamask_d2.data.image_io import ImageReadError

from .mapper import ImageIOMapper
from .samplers import IterationBatchSampler

logger = logging.getLogger(__name__)
MAPPER_RETRIES = 3
# Training skips images that fail to decode up to this fraction of the dataset (at least one).
MAX_UNREADABLE_FRACTION = 0.01


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

    A mapper may return None for an image it cannot use (detectron2's ``MapDataset`` convention),
    or raise :class:`ImageReadError` for an image that fails only when decoded (the headers were
    checked before training): another index, drawn from ``seed``, is tried then. Unreadable files
    are named in the log and counted; more than ``max_unreadable`` of them (distinct files, per
    data-loading process) stop training with their list.
    """

    def __init__(
        self,
        dataset: Dataset,
        mapper: Callable[[dict], dict | None],
        max_unreadable: int | None = None,
    ):
        self.dataset = dataset
        self.mapper = mapper
        if max_unreadable is None:
            max_unreadable = max(1, int(MAX_UNREADABLE_FRACTION * len(dataset)))
        self.max_unreadable = max_unreadable
        self.unreadable: dict[str, str] = {}  # file name -> why

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        index, seed = item
        fallback = random.Random(seed)
        for _ in range(MAPPER_RETRIES + 1):
            with seeded_rngs(seed):
                try:
                    mapped = self.mapper(self.dataset[index])
                except ImageReadError as e:
                    self._count_unreadable(self.dataset[index].get("file_name", str(index)), e)
                    mapped = None
                else:
                    if mapped is None:
                        logger.warning(
                            f"the data mapper returned None for dataset index {index}; skipping it"
                        )
            if mapped is not None:
                return mapped
            index = self._other_index(fallback)
        raise RuntimeError(f"the data mapper returned None {MAPPER_RETRIES + 1} times in a row")

    def _other_index(self, rng: random.Random) -> int:
        """A random index, avoiding the files known to be unreadable (a few draws at most)."""
        for _ in range(MAPPER_RETRIES * 10):
            index = rng.randrange(len(self.dataset))
            if self.dataset[index].get("file_name") not in self.unreadable:
                break
        return index

    def _count_unreadable(self, file_name: str, error: ImageReadError) -> None:
        first_time = file_name not in self.unreadable
        self.unreadable[file_name] = str(error)
        if len(self.unreadable) > self.max_unreadable:
            listed = "\n  ".join(self.unreadable.values())
            raise UnreadableImagesError(
                f"{len(self.unreadable)} of {len(self.dataset)} training images cannot be "
                f"decoded, more than the {self.max_unreadable} skipped at most; fix or remove "
                f"them:\n  {listed}"
            )
        if first_time:
            logger.warning(
                f"skipping an image that cannot be decoded ({len(self.unreadable)} so far, "
                f"training stops past {self.max_unreadable}): {error}"
            )


class UnreadableImagesError(ImageReadError):
    """More training images failed to decode than a run skips."""


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
        mapper if mapper is not None else ImageIOMapper(cfg, is_train=True),
    )
    return ResumableTrainLoader(dataset, sampler, cfg.DATALOADER.NUM_WORKERS)
