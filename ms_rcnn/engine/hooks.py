"""Hooks for exact resumption and for checking distributed runs."""
import io
import os.path as osp
import random
from typing import List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import AmpOptimWrapper
from mmengine.runner import find_latest_checkpoint

from ..registry import HOOKS
from ..utils.checkpoint import check_checkpoint_fits
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
      from all ranks (one small collective) just before ``CheckpointHook`` saves: at the end of
      each training epoch, after each iteration at which an iteration-based ``CheckpointHook``
      saves (by its own ``interval``/``save_begin``/``save_last`` rule, not every iteration),
      and after each validation inside training when a ``CheckpointHook`` keeps the best
      checkpoint (the states from before validation, which training goes on from). A
      checkpoint saved at another iteration gets no states, with a warning.
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
        self._gathered_at: Optional[int] = None  # iterations done when gathered
        self._pending: Optional[tuple] = None
        self._val_state: Optional[dict] = None
        self._iter_checkpoint_hooks: List[CheckpointHook] = []
        self._gather_after_val = False

    # saving -------------------------------------------------------------------------------
    def _gather(self, iters_done: int, state: Optional[dict] = None) -> None:
        if get_world_size() > 1:
            self._gathered = all_gather_object(state or capture_rng_state())
            self._gathered_at = iters_done

    def after_train_epoch(self, runner) -> None:
        self._gather(runner.iter)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        # Same decision on every rank: it depends only on the iteration and the hooks' configs.
        if any(saves_after_this_iter(hook, runner) for hook in self._iter_checkpoint_hooks):
            self._gather(runner.iter + 1)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        world_size = get_world_size()
        if world_size > 1:
            at = checkpoint.get('meta', {}).get('iter')
            if self._gathered is None or self._gathered_at != at:
                runner.logger.warning(
                    f'RNGStateHook: no generator states were gathered at iteration {at}, so '
                    'this checkpoint holds none; a run resumed from it re-seeds them')
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

    def after_val_epoch(self, runner, metrics=None) -> None:
        # CheckpointHook may save the best checkpoint next: gather the training stream's states
        # as they were before validation (after_val restores them).
        if self._gather_after_val:
            self._gather(runner.iter, self._val_state)

    # resuming -------------------------------------------------------------------------------
    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._pending = (checkpoint.get('rng_state'), checkpoint.get('meta', {}).get('iter'))

    def before_train(self, runner) -> None:
        checkpoint_hooks = [h for h in runner.hooks if isinstance(h, CheckpointHook)]
        distributed = get_world_size() > 1
        self._iter_checkpoint_hooks = [h for h in checkpoint_hooks
                                       if distributed and not h.by_epoch]
        self._gather_after_val = distributed and any(
            getattr(h, 'save_best', None) for h in checkpoint_hooks)
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
        loader = getattr(runner.train_loop, 'dataloader', None)
        if getattr(loader, 'persistent_workers', False) and getattr(loader, 'num_workers', 0):
            runner.logger.warning(
                'RNGStateHook: train_dataloader.persistent_workers is True: its workers keep '
                'their own random generators across epochs, so data augmentation after this '
                'resume differs from the uninterrupted run. Set '
                'train_dataloader.persistent_workers=False for an exact resume.')


def saves_after_this_iter(hook: CheckpointHook, runner) -> bool:
    """Whether an iteration-based ``CheckpointHook`` saves after the current iteration.

    The rule of mmengine 0.10's ``CheckpointHook.after_train_iter``, asked before it runs.
    """
    return hook.every_n_train_iters(runner, hook.interval, hook.save_begin) or \
        bool(hook.save_last and hook.is_last_train_iter(runner))


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


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the message names the step and the images."""


def non_finite_terms(log_vars: dict) -> List[str]:
    """Names of the loss terms of a step's ``log_vars`` that are NaN or infinite.

    Args:
        log_vars (dict): ``model.train_step``'s output: name to scalar tensor or number.

    Returns:
        list[str]: The names, in order.
    """
    bad = []
    for name, value in log_vars.items():
        finite = torch.isfinite(value).all() if isinstance(value, torch.Tensor) \
            else np.isfinite(value)
        if 'loss' in name and not bool(finite):
            bad.append(name)
    return bad


def non_finite_tensors(state_dict: dict) -> List[str]:
    """Names of the floating-point tensors of a ``state_dict`` that hold a NaN or infinity.

    Args:
        state_dict (dict): Name to tensor (other values are ignored).

    Returns:
        list[str]: The names, in order.
    """
    return [name for name, value in state_dict.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point()
            and not bool(torch.isfinite(value).all())]


def batch_image_paths(data_batch) -> List[str]:
    """The ``img_path`` of every sample of a batch (those that have one)."""
    samples = data_batch.get('data_samples', []) if isinstance(data_batch, dict) else []
    return [s.img_path for s in samples if 'img_path' in getattr(s, 'metainfo', {})]


@HOOKS.register_module()
class CheckFiniteLossHook(Hook):
    """Stop training with a clear error when the loss becomes NaN or infinite.

    With a plain optimizer a non-finite loss has already poisoned the weights by the time the
    hook runs, so it stops at once, before :class:`~mmengine.hooks.CheckpointHook` (which runs
    later) could save them: the last checkpoint on disk stays the last good one. Under mixed
    precision (``AmpOptimWrapper``) the gradient scaler skips the optimizer step of such an
    iteration (fp16 overflow), so the weights are not updated (train-mode BatchNorm statistics
    are; our R-50 configs freeze them), and an isolated one is survivable; the run stops after
    ``amp_patience`` consecutive ones. In distributed runs every rank takes the same decision
    (the flag is all-reduced), so none is left waiting.

    The error names the iteration, the loss terms and the image files of the batch.

    A non-finite *gradient* can come with a finite loss (the derivative of ``sqrt`` at 0, an
    overflow in backward only) and poison the weights all the same; the next iteration's loss
    then stops the run, unless a checkpoint is saved first. So before each save the hook also
    checks the weights (``before_save_checkpoint``, a pass over them on the host, once per
    save) and refuses to save non-finite ones, naming them.

    Args:
        amp_patience (int): Consecutive non-finite steps tolerated under mixed precision.
            Defaults to 10.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, amp_patience: int = 10) -> None:
        self.amp_patience = amp_patience
        self.consecutive = 0

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        bad_terms = non_finite_terms(outputs or {})
        flag = torch.tensor(float(bool(bad_terms)))
        if get_world_size() > 1:
            from mmengine.dist import all_reduce
            all_reduce(flag, op='max')
        if flag.item() == 0:
            self.consecutive = 0
            return
        self.consecutive += 1
        amp = isinstance(runner.optim_wrapper, AmpOptimWrapper)
        where = (f'iteration {runner.iter + 1}: non-finite {", ".join(bad_terms)}; images '
                 f'{batch_image_paths(data_batch)}' if bad_terms else
                 f'iteration {runner.iter + 1}: non-finite loss on another rank')
        if amp and self.consecutive <= self.amp_patience:
            runner.logger.warning(f'{where} (step skipped by the gradient scaler, '
                                  f'{self.consecutive}/{self.amp_patience})')
            return
        raise NonFiniteLossError(
            f'{where}. Training stopped before this state could be checkpointed; resume from '
            'the last checkpoint with a lower learning rate or after checking these images '
            '(tools/check_dataset.py).')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = non_finite_tensors(checkpoint.get('state_dict') or {})
        if not bad:
            return
        meta = checkpoint.get('meta') or {}
        names = ', '.join(bad[:5]) + (f' and {len(bad) - 5} more' if len(bad) > 5 else '')
        raise NonFiniteLossError(
            f'epoch {meta.get("epoch")}, iteration {meta.get("iter")}: the weights hold NaN or '
            f'infinite values ({names}) although the losses were finite: a non-finite '
            'gradient. Training stopped without saving this checkpoint; resume from the last '
            'one with a lower learning rate or gradient clipping (optim_wrapper.clip_grad).')


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Refuse to test or resume a checkpoint that does not fit the model.

    mmengine loads checkpoints non-strictly and only prints what did not match; this raises
    :class:`ms_rcnn.utils.checkpoint.CheckpointMismatchError`, naming the file, before the
    weights are loaded. ``tools/test.py`` adds it, and ``tools/train.py`` when resuming; not
    for ``load_from`` in training, where a checkpoint of another model (fine-tuning) is
    expected to leave some parameters new.
    """
    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        filename = runner._load_from or find_latest_checkpoint(runner.work_dir)
        check_checkpoint_fits(runner.model, checkpoint, filename or 'the checkpoint')
