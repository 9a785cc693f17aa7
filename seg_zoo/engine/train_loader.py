"""A training data loader whose stream is a pure function of (seed, position).

detectron2's ``TrainingSampler`` restarts its shuffled stream from the beginning when a run
is resumed, and augmentations draw from whatever RNG state each loader worker happens to be
in. Both make a resumed run see different data from an uninterrupted one. Here:

- ``ResumableTrainingSampler`` yields ``(position, index)`` pairs of one infinite shuffled
  stream (position counts samples over all ranks) and can start at any position;
- ``SeededMapDataset`` seeds python's, numpy's and torch's RNGs from ``(seed, position)``
  before calling the mapper, so sample ``position`` gets the same augmentation whichever
  worker, rank count or restart produces it.

With ``cfg.SEED >= 0`` and no aspect-ratio grouping, resuming from a checkpoint at iteration
``k`` therefore replays exactly the batches an uninterrupted run sees from ``k + 1`` on.
(Aspect-ratio grouping holds partial buckets in memory, which a checkpoint does not keep.)
"""

from __future__ import annotations

import itertools
import logging
import random
import zlib
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)


def _mix(*numbers: int) -> int:
    """A 31-bit seed from integers; stable across processes and python versions."""
    data = b"".join(int(n).to_bytes(8, "little", signed=True) for n in numbers)
    return zlib.crc32(data) & 0x7FFFFFFF


class ResumableTrainingSampler(Sampler):
    """An infinite shuffled stream of ``(position, dataset index)`` pairs, split over ranks.

    Epoch ``e`` is a permutation drawn from a generator seeded with ``(seed, e)``; rank ``r``
    of ``world_size`` takes positions ``r, r + world_size, ...`` from ``start_position`` on.
    """

    def __init__(
        self,
        size: int,
        *,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ):
        if size <= 0:
            raise ValueError(f"ResumableTrainingSampler needs a non-empty dataset, got size {size}")
        self._size = size
        self._seed = int(seed)
        self._shuffle = shuffle
        self._rank = rank
        self._world_size = world_size
        self._start_position = 0

    def set_start_position(self, position: int) -> None:
        """Skip the first ``position`` samples of the global stream (all ranks together)."""
        if position < 0:
            raise ValueError(f"start position must be >= 0, got {position}")
        self._start_position = int(position)

    def _global_stream(self) -> Iterator[tuple[int, int]]:
        epoch, position = divmod(self._start_position, self._size)
        first_epoch, offset = epoch, position
        for epoch in itertools.count(first_epoch):
            if self._shuffle:
                g = torch.Generator().manual_seed(_mix(self._seed, epoch))
                order = torch.randperm(self._size, generator=g).tolist()
            else:
                order = list(range(self._size))
            start = offset if epoch == first_epoch else 0
            for i in range(start, self._size):
                yield epoch * self._size + i, order[i]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # The stream starts at start_position, which is a multiple of world_size whenever it
        # was computed as iterations * batch over all ranks, so rank r keeps its own slot.
        yield from itertools.islice(self._global_stream(), self._rank, None, self._world_size)


class SeededMapDataset(Dataset):
    """``mapper(dataset[index])`` with every RNG seeded from ``(seed, position)``.

    A mapper returning ``None`` (a sample it cannot use) is retried on the next index, with
    the RNG re-seeded for the retry, and a warning: the retry is deterministic too.
    """

    def __init__(self, dataset: list, mapper: Callable, seed: int):
        self._dataset = dataset
        self._mapper = mapper
        self._seed = int(seed)

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, key: tuple[int, int]):
        position, index = key
        # With NUM_WORKERS 0 the mapper runs in the training process: keep its RNG streams
        # (which the model's point sampling and dropout draw from) as they were.
        py_state, np_state = random.getstate(), np.random.get_state()
        torch_state = torch.random.get_rng_state()
        try:
            for attempt in range(len(self._dataset)):
                seed = _mix(self._seed, position, attempt)
                random.seed(seed)
                np.random.seed(seed)
                torch.random.default_generator.manual_seed(seed)
                i = (index + attempt) % len(self._dataset)
                data = self._mapper(self._dataset[i])
                if data is not None:
                    return data
                logger.warning("mapper returned None for dataset index %d; trying the next", i)
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)
            torch.random.set_rng_state(torch_state)
        raise RuntimeError("the dataset mapper returned None for every sample of the dataset")
