"""Data-loader worker seeding that varies by epoch and rank and survives an exact resume."""
import os
import random

import numpy as np
import torch
from mmengine.dist import get_rank, is_distributed

from ..registry import FUNCTIONS


def worker_seed(torch_worker_seed: int, rank: int) -> int:
    """Mix the seed torch gave a data-loader worker with the process's rank.

    Args:
        torch_worker_seed (int): ``torch.initial_seed()`` inside the worker, in [0, 2**64).
        rank (int): The process's global rank (0 without distributed training).

    Returns:
        int: A seed in [0, 2**64); different ranks get unrelated seeds.
    """
    sequence = np.random.SeedSequence(entropy=torch_worker_seed, spawn_key=(rank,))
    return int(sequence.generate_state(1, dtype=np.uint64)[0])


def process_rank() -> int:
    """This process's global rank, also inside a data-loader worker.

    A forked worker inherits the initialised process group; a spawned one does not, but it
    inherits ``RANK``, which torchrun sets and mmengine's Slurm and MPI set-ups export.
    """
    if is_distributed():
        return get_rank()
    return int(os.environ.get('RANK', 0))


@FUNCTIONS.register_module()
def seed_worker_from_torch(worker_id: int) -> None:
    """``worker_init_fn``: seed torch, numpy and ``random`` from torch's seed and the rank.

    When ``randomness.seed`` is set, mmengine's default ``worker_init_fn`` seeds every worker
    with ``seed + worker_id`` (+ rank) each time it starts. With ``persistent_workers=False``
    workers start every epoch, so every epoch replays the same augmentation draws. torch seeds
    each worker with ``base_seed + worker_id``, where ``base_seed`` is drawn from the main
    process's generator whenever an epoch's workers start: different each epoch, reproducible
    from the seed, and restored with the generators by ``ms_rcnn.RNGStateHook`` on resume.
    That generator is seeded alike on every rank (``randomness.diff_rank_seed=False``, the
    default), so this function mixes in the rank: each rank's workers augment differently.

    Use it as ``train_dataloader = dict(
    worker_init_fn=dict(type='ms_rcnn.seed_worker_from_torch'))``.

    Args:
        worker_id (int): The worker's index (torch already folded it into its seed).
    """
    seed = worker_seed(torch.initial_seed(), process_rank())
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
