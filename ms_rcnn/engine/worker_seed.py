"""Data-loader worker seeding that varies by epoch and survives an exact resume."""
import random

import numpy as np
import torch

from ..registry import FUNCTIONS


@FUNCTIONS.register_module()
def seed_worker_from_torch(worker_id: int) -> None:
    """``worker_init_fn``: seed numpy and ``random`` from the seed torch gave this worker.

    When ``randomness.seed`` is set, mmengine's default ``worker_init_fn`` seeds every worker
    with ``seed + worker_id`` (+ rank) each time it starts. With ``persistent_workers=False``
    workers start every epoch, so every epoch replays the same augmentation draws. torch seeds
    each worker with ``base_seed + worker_id``, where ``base_seed`` is drawn from the main
    process's generator whenever an epoch's workers start: different each epoch, reproducible
    from the seed, and restored with the generators by ``ms_rcnn.RNGStateHook`` on resume.
    This function hands that seed to numpy and ``random`` too.

    Use it as ``train_dataloader = dict(
    worker_init_fn=dict(type='ms_rcnn.seed_worker_from_torch'))``.

    Args:
        worker_id (int): The worker's index (torch already folded it into its seed).
    """
    seed = torch.initial_seed()
    np.random.seed(seed % 2**32)
    random.seed(seed)
