"""Atomic local writes for mmengine checkpoints and the ``last_checkpoint`` pointer.

How mmengine 0.10 writes a checkpoint: ``CheckpointHook`` calls ``Runner.save_checkpoint``, which
calls ``mmengine.runner.checkpoint.save_checkpoint``; that serialises the whole checkpoint with
``torch.save`` into memory and hands the bytes to the file backend's ``put``. For a local path
the backend is ``LocalBackend`` (``FileClient``'s ``HardDiskBackend`` when the deprecated
``file_client_args`` are given), whose ``put`` is ``open(path, 'wb').write(data)``: a crash, a
kill or a full disk during the write leaves a truncated file under the final name. Afterwards the
hook writes the ``last_checkpoint`` pointer (``open(path, 'w').write(...)``), which ``--resume``
reads.

:func:`install_atomic_checkpoint_writes` (called on ``import ms_rcnn``) changes only that:

- mmengine's ``'local'`` backend (and ``FileClient``'s ``'disk'`` backend) become
  :class:`AtomicLocalBackend` / :class:`AtomicHardDiskBackend`, whose ``put`` and ``put_text``
  write a hidden temporary file in the destination's directory, flush and ``fsync`` it, then
  ``os.replace`` it onto the final name and ``fsync`` the directory. Every other method is
  ``LocalBackend``'s. A reader sees the old file or the complete new one, never a partial one.
- ``CheckpointHook`` saves first, then writes the ``last_checkpoint`` pointer the same way,
  and prunes after (:func:`save_then_prune`). mmengine already writes the pointer only after
  ``save_checkpoint`` has returned, so it always names a complete checkpoint; now the pointer
  itself can no longer be left empty or half-written by a crash. mmengine deletes
  the checkpoints beyond ``max_keep_ckpts`` *before* saving the new one, so with
  ``max_keep_ckpts=1`` a crash while saving left no checkpoint at all and a pointer naming a
  deleted file.
- ``CheckpointHook`` deletes the previous best checkpoint only after saving the new one
  (:func:`save_best_then_remove`); mmengine deletes it first.

Interrupted writes leave ``.<name>.<host>.<pid>.<random>.tmp`` files (a hash in place of a name
too long for that); the next successful write of the same name removes those whose process (on
this host) is gone.
"""
import builtins
import functools
import glob
import hashlib
import os
import os.path as osp
import socket
import tempfile
from pathlib import Path
from typing import Union

from mmengine.fileio import LocalBackend, register_backend
from mmengine.fileio.file_client import FileClient, HardDiskBackend

POINTER_NAME = 'last_checkpoint'
_TMP_SUFFIX = '.tmp'


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import (single-threaded then): os.umask has no read-only form before 3.13.
_UMASK = _current_umask()


#: Longest file name most file systems take (bytes), and the room a temporary file's name
#: needs beyond its prefix: the pid, ``mkstemp``'s random part and the suffix.
_NAME_MAX = 255
_TMP_ROOM = 32


def _tmp_prefix(name: str) -> str:
    """``.<name>.<host>.``; a name too long to leave room for the rest is replaced by a hash of
    it, so that any name ``open`` takes can be written (and its own stale files found)."""
    host = socket.gethostname()
    prefix = f'.{name}.{host}.'
    if len(os.fsencode(prefix)) + _TMP_ROOM <= _NAME_MAX:
        return prefix
    return f'.{hashlib.sha256(os.fsencode(name)).hexdigest()[:24]}.{host}.'


def _fsync_dir(dirname: str) -> None:
    """Persist a rename: fsync the directory (best effort; not possible on every OS/FS)."""
    flags = getattr(os, 'O_DIRECTORY', None)
    if flags is None:
        return
    try:
        fd = os.open(dirname, os.O_RDONLY | flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_tmp_files(dirname: str, name: str) -> None:
    """Remove temporary files of interrupted writes of ``name`` by dead processes of this host."""
    prefix = _tmp_prefix(name)
    for path in glob.glob(osp.join(glob.escape(dirname), glob.escape(prefix) + '*' + _TMP_SUFFIX)):
        pid = osp.basename(path)[len(prefix):].split('.', 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            try:
                os.remove(path)
            except OSError:
                pass
        except OSError:  # e.g. EPERM: the process exists
            pass


def atomic_write(filepath: Union[str, Path], data: Union[bytes, str],
                 encoding: str = 'utf-8') -> None:
    """Write ``data`` to ``filepath`` so that readers never see a partial file.

    The data go to a temporary file in the same directory, which is flushed, fsynced and then
    renamed onto ``filepath`` (``os.replace``, atomic on POSIX and Windows); the directory is
    fsynced afterwards. On any error the temporary file is removed and ``filepath`` is left as it
    was. Parent directories are created. A symlink is written through (its target is replaced);
    an existing non-regular file (a device, a FIFO) is written in place.

    Args:
        filepath (str or Path): Destination.
        data (bytes or str): Content; ``str`` is written in text mode with ``encoding``.
        encoding (str): Encoding for ``str`` data. Defaults to 'utf-8'.
    """
    filepath = os.fspath(filepath)
    text = isinstance(data, str)
    target = osp.realpath(filepath) if osp.islink(filepath) else filepath
    if osp.exists(target) and not osp.isfile(target):
        with builtins.open(target, 'w' if text else 'wb',
                           **({'encoding': encoding} if text else {})) as f:
            f.write(data)
        return
    dirname = osp.dirname(osp.abspath(target))
    name = osp.basename(target)
    os.makedirs(dirname, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'{_tmp_prefix(name)}{os.getpid()}.', suffix=_TMP_SUFFIX,
                               dir=dirname)
    try:
        with os.fdopen(fd, 'w' if text else 'wb',
                       **({'encoding': encoding} if text else {})) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode open() would have (or the old file's).
        mode = (os.stat(target).st_mode & 0o7777) if osp.isfile(target) else 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(dirname)
    _remove_stale_tmp_files(dirname, name)


class AtomicLocalBackend(LocalBackend):
    """mmengine's ``LocalBackend`` whose ``put`` and ``put_text`` are atomic (see
    :func:`atomic_write`)."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write(filepath, obj)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write(filepath, obj, encoding=encoding)


class AtomicHardDiskBackend(HardDiskBackend):
    """``FileClient``'s deprecated ``'disk'`` backend with atomic ``put`` and ``put_text``."""

    put = AtomicLocalBackend.put
    put_text = AtomicLocalBackend.put_text


def install_atomic_checkpoint_writes() -> None:
    """Make mmengine's local checkpoint and ``last_checkpoint`` writes atomic. Idempotent.

    - registers :class:`AtomicLocalBackend` as mmengine's ``'local'`` backend (prefix ``''``:
      plain paths) and :class:`AtomicHardDiskBackend` as ``FileClient``'s ``'disk'`` backend,
      dropping cached instances of the plain ones;
    - replaces ``CheckpointHook._save_checkpoint_with_step`` with :func:`save_then_prune`,
      which writes the ``last_checkpoint`` pointer with :func:`atomic_write`;
    - wraps ``CheckpointHook._save_best_checkpoint`` with :func:`save_best_then_remove`.
    """
    from mmengine.fileio import io as mm_io
    from mmengine.hooks import checkpoint_hook

    register_backend('local', AtomicLocalBackend, force=True, prefixes='')
    for key, backend in list(mm_io.backend_instances.items()):
        if type(backend) is LocalBackend:
            mm_io.backend_instances.pop(key)
    if not issubclass(FileClient._backends.get('disk', object), AtomicHardDiskBackend):
        FileClient._register_backend('disk', AtomicHardDiskBackend, force=True, prefixes='')
    checkpoint_hook.CheckpointHook._save_checkpoint_with_step = save_then_prune
    best = checkpoint_hook.CheckpointHook._save_best_checkpoint
    if not getattr(best, '_ms_rcnn_save_first', False):
        checkpoint_hook.CheckpointHook._save_best_checkpoint = save_best_then_remove(best)


def save_then_prune(hook, runner, step: int, meta: dict) -> None:
    """``CheckpointHook._save_checkpoint_with_step`` in a crash-safe order.

    Saves checkpoint ``step``, then points ``last_checkpoint`` at it, and only then deletes the
    checkpoint that falls out of the last ``max_keep_ckpts``. At every moment a complete
    checkpoint exists and the pointer names one (a crash between saving and pruning leaves one
    checkpoint too many, never one too few). mmengine 0.10 deletes first. Everything else
    (bookkeeping in ``keep_ckpt_ids`` and the message hub, arguments of ``save_checkpoint``) is
    as in mmengine.
    """
    from mmengine.dist import is_main_process

    outdated = []
    if hook.max_keep_ckpts > 0 and not (hook.keep_ckpt_ids and hook.keep_ckpt_ids[-1] == step):
        if len(hook.keep_ckpt_ids) == hook.max_keep_ckpts:
            outdated.append(hook.keep_ckpt_ids.popleft())
        hook.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(hook.keep_ckpt_ids))

    ckpt_filename = hook.filename_tmpl.format(step)
    hook.last_ckpt = hook.file_backend.join_path(hook.out_dir, ckpt_filename)
    runner.message_hub.update_info('last_ckpt', hook.last_ckpt)
    runner.save_checkpoint(
        hook.out_dir, ckpt_filename, hook.file_client_args, save_optimizer=hook.save_optimizer,
        save_param_scheduler=hook.save_param_scheduler, meta=meta, by_epoch=hook.by_epoch,
        backend_args=hook.backend_args, **hook.args)
    if not is_main_process():
        return
    atomic_write(osp.join(runner.work_dir, POINTER_NAME), hook.last_ckpt)
    for old_step in outdated:
        if old_step == step:  # never the checkpoint just written
            continue
        old = hook.file_backend.join_path(hook.out_dir, hook.filename_tmpl.format(old_step))
        if hook.file_backend.isfile(old):
            hook.file_backend.remove(old)
        elif hook.file_backend.isdir(old):  # checkpoints saved by deepspeed are directories
            hook.file_backend.rmtree(old)


class _DeferredRemovals:
    """A file backend whose ``remove`` and ``rmtree`` only record their path."""

    def __init__(self, backend):
        self._backend = backend
        self.paths = []

    def remove(self, path) -> None:
        self.paths.append(('remove', path))

    def rmtree(self, path) -> None:
        self.paths.append(('rmtree', path))

    def __getattr__(self, name: str):
        return getattr(self._backend, name)


def save_best_then_remove(save_best):
    """``CheckpointHook._save_best_checkpoint`` that deletes the previous best checkpoint only
    after the new one is saved.

    mmengine 0.10 deletes the previous best first, so a crash (or a full disk) while saving the
    new best left no best checkpoint at all. Here every deletion the hook asks for during the
    call is carried out once the call has returned, except of a path that is a best
    checkpoint again; if the call raises, nothing is deleted.
    """

    @functools.wraps(save_best)
    def wrapper(hook, runner, metrics) -> None:
        backend = hook.file_backend
        deferred = _DeferredRemovals(backend)
        hook.file_backend = deferred
        try:
            save_best(hook, runner, metrics)
        finally:
            hook.file_backend = backend
        current = {getattr(hook, 'best_ckpt_path', None),
                   *getattr(hook, 'best_ckpt_path_dict', {}).values()}
        for method, path in deferred.paths:
            if path not in current:
                getattr(backend, method)(path)

    wrapper._ms_rcnn_save_first = True
    return wrapper
