"""Runtime pieces of ms_rcnn: hooks, atomic checkpoint writes, CPU distributed runs.

:func:`install_engine_patches` is called on ``import ms_rcnn``; see
:mod:`ms_rcnn.engine.atomic_io` and :mod:`ms_rcnn.engine.cpu_distributed` for exactly what it
changes in mmengine.
"""
from .atomic_io import (AtomicHardDiskBackend, AtomicLocalBackend, atomic_write,
                        install_atomic_checkpoint_writes)
from .cpu_distributed import enable_cpu_distributed
from .hooks import (CheckFiniteLossHook, CheckpointFitHook, DumpRankWeightsHook,
                    NonFiniteLossError, RNGStateHook, capture_rng_state, restore_rng_state)
from .worker_seed import seed_worker_from_torch


def install_engine_patches() -> None:
    """Atomic local checkpoint / ``last_checkpoint`` writes, and mmengine's ``pytorch`` and
    ``slurm`` launchers on machines without a GPU. Idempotent."""
    install_atomic_checkpoint_writes()
    enable_cpu_distributed()


__all__ = [
    'AtomicHardDiskBackend', 'AtomicLocalBackend', 'CheckFiniteLossHook', 'CheckpointFitHook',
    'DumpRankWeightsHook',
    'NonFiniteLossError', 'RNGStateHook',
    'atomic_write', 'capture_rng_state', 'enable_cpu_distributed',
    'install_atomic_checkpoint_writes', 'install_engine_patches', 'restore_rng_state',
    'seed_worker_from_torch'
]
