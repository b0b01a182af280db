"""Hooks for exact resumption and for checking distributed runs."""
import io
import os.path as osp
import random
from typing import Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper

from ..registry import HOOKS
from .atomic_io import atomic_write


def capture_rng_state() -> dict:
    """The states of Python's, numpy's and torch's global generators, as plain values/tensors.

    Everything in the result loads with ``torch.load(weights_only=True)``.
    """
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = dict(python=dict(version=version, internal=list(internal), gauss_next=gauss_next),
                 numpy=dict(kind=kind, keys=keys.tolist(), pos=int(pos),
                            has_gauss=int(has_gauss), cached_gaussian=float(cached)),
                 torch=torch.get_rng_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def restore_rng_state(state: dict) -> None:
    """Set the global generators to a state from :func:`capture_rng_state`."""
    py = state['python']
    random.setstate((py['version'], tuple(py['internal']), py['gauss_next']))
    npy = state['numpy']
    np.random.set_state((npy['kind'], np.asarray(npy['keys'], dtype=np.uint32), npy['pos'],
                         npy['has_gauss'], npy['cached_gaussian']))
    torch.set_rng_state(state['torch'].cpu())
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'].cpu())


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Save the random generators' states in checkpoints and restore them on resume.

    mmengine 0.10 does not checkpoint the generators: a resumed run re-seeds them, so RPN/RoI
    sampling (``torch.randperm``) and random augmentation draw different numbers than the
    uninterrupted run and the weights diverge. With this hook, a run that is killed and resumed
    from an epoch checkpoint of an ``EpochBasedTrainLoop`` reproduces the uninterrupted run
    exactly (given deterministic kernels and data order: no or seeded shuffling, and
    ``persistent_workers=False`` when ``num_workers > 0``, because persistent workers keep their
    own generators).

    What it does:

    - ``before_save_checkpoint``: stores ``checkpoint['rng_state'] = dict(world_size=N,
      ranks=[state of rank 0, ..., rank N-1])``. In distributed runs the states are gathered
      from all ranks at the end of each training epoch (and of each iteration when a
      ``CheckpointHook`` saves by iteration), just before ``CheckpointHook`` saves.
    - ``after_load_checkpoint`` + ``before_train``: when training resumes from that checkpoint
      (``runner.iter`` equals the checkpoint's iteration; not for ``load_from``), each rank
      restores its own state (as the last ``before_train`` action, after mmengine's re-seeding).
      A checkpoint from a different world size, or without ``rng_state``, is resumed as
      mmengine does it, with a warning.
    - ``before_val`` / ``after_val``: validation inside training runs with the generators
      saved and restored around it, so the training stream does not depend on whether, or how
      often, validation ran (a resumed run does not repeat the validation at its checkpoint).

    With an ``IterBasedTrainLoop`` mmengine skips the consumed batches by running the data
    pipeline again after ``before_train``, so resumption is close but not exact there.
    """

    priority = 85  # after every default hook except CheckpointHook (VERY_LOW = 90)

    def __init__(self) -> None:
        self._gathered: Optional[list] = None
        self._pending: Optional[tuple] = None
        self._val_state: Optional[dict] = None
        self._gather_each_iter = False

    # saving -------------------------------------------------------------------------------
    def _gather(self) -> None:
        if get_world_size() > 1:
            self._gathered = all_gather_object(capture_rng_state())

    def after_train_epoch(self, runner) -> None:
        self._gather()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self._gather_each_iter:
            self._gather()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        world_size = get_world_size()
        if world_size > 1:
            if self._gathered is None:
                runner.logger.warning('RNGStateHook: no gathered generator states to save')
                return
            ranks = list(self._gathered)
        else:
            ranks = [self._val_state or capture_rng_state()]
        checkpoint['rng_state'] = dict(world_size=world_size, ranks=ranks)

    # validation inside training -------------------------------------------------------------
    def before_val(self, runner) -> None:
        self._val_state = capture_rng_state()

    def after_val(self, runner) -> None:
        if self._val_state is not None:
            restore_rng_state(self._val_state)
            self._val_state = None

    # resuming -------------------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = (checkpoint.get('rng_state'), checkpoint.get('meta', {}).get('iter'))

    def before_train(self, runner) -> None:
        self._gather_each_iter = get_world_size() > 1 and any(
            isinstance(h, CheckpointHook) and not h.by_epoch for h in runner.hooks)
        if self._pending is None:
            return
        saved, ckpt_iter = self._pending
        self._pending = None
        if not ckpt_iter or runner.iter != ckpt_iter:
            return  # load_from, not resume
        if saved is None:
            runner.logger.warning('RNGStateHook: the checkpoint holds no generator states; '
                                  'the resumed run will not reproduce the uninterrupted one')
            return
        if saved['world_size'] != get_world_size():
            runner.logger.warning(
                f"RNGStateHook: the checkpoint's generator states are for "
                f"{saved['world_size']} processes, this run has {get_world_size()}; "
                'not restoring them')
            return
        restore_rng_state(saved['ranks'][get_rank()])
        runner.logger.info('RNGStateHook: restored the random generators of the checkpoint')


@HOOKS.register_module()
class DumpRankWeightsHook(Hook):
    """After training, every rank saves its own model weights, to compare ranks.

    Writes ``<work_dir>/<out_dir>/rank_<rank>.pth`` holding ``dict(rank, world_size, iter,
    state_dict)`` (CPU tensors), atomically.

    Args:
        out_dir (str): Sub-directory of the work dir. Defaults to 'rank_weights'.
    """

    priority = 'LOWEST'

    def __init__(self, out_dir: str = 'rank_weights') -> None:
        self.out_dir = out_dir

    def after_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        rank = get_rank()
        buffer = io.BytesIO()
        torch.save(dict(rank=rank, world_size=get_world_size(), iter=runner.iter,
                        state_dict=state), buffer)
        atomic_write(osp.join(runner.work_dir, self.out_dir, f'rank_{rank}.pth'),
                     buffer.getvalue())
