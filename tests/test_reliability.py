"""Crash safety: atomic checkpoint writes, and exact resumption after SIGKILL.

The training tests run ``tools/train.py`` on synthetic data (8 images, 4 iterations per epoch)
for 3 epochs, once uninterrupted and several times interrupted, and compare the final weights
bit for bit. Interruptions are real: SIGKILL in the middle of epoch 2, and the kernel killing
the process with SIGXFSZ halfway through writing ``epoch_2.pth`` (a file-size limit applied to
the running process with ``prlimit``).
"""
import glob
import os
import os.path as osp
import random
import shutil
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.fileio.file_client import FileClient

import ms_rcnn  # noqa: F401  installs the atomic backends
from ms_rcnn.engine import (AtomicHardDiskBackend, AtomicLocalBackend, atomic_write,
                            capture_rng_state, restore_rng_state)
from ms_rcnn.engine.atomic_io import save_then_prune
from ms_rcnn.testing import REPO_ROOT, make_toy_coco
from ms_rcnn.utils.checkpoint import load_local_checkpoint

from .conftest import TOY_CONFIG

try:
    import resource
except ImportError:  # not POSIX
    resource = None

PY = sys.executable
EPOCHS = 3
ITERS_PER_EPOCH = 4  # 8 training images, batch size 2
TRAIN_OPTIONS = ['--cfg-options', f'train_cfg.max_epochs={EPOCHS}',
                 'default_hooks.checkpoint.interval=1', 'randomness.seed=0',
                 'randomness.deterministic=True', 'val_cfg=None', 'val_dataloader=None',
                 'val_evaluator=None']
# A hard crash when a file-size limit is hit: Python ignores SIGXFSZ (the write then fails
# with EFBIG); restore the default action, which kills the process.
KILLED_BY_FILE_SIZE = ('import runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_DFL);'
                       ' sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")')


# One intra-op thread: the same in every run compared (results may depend on the thread
# count), and far faster than 2 threads on a busy 2-core machine.
ENV = dict(os.environ, OMP_NUM_THREADS='1')


def run(cmd, timeout=900):
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f'{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


def train_cmd(config, data_root, work_dir, *extra):
    return [PY, 'tools/train.py', config, '--data-root', data_root, '--work-dir', work_dir,
            *extra, *TRAIN_OPTIONS]


def run_until(cmd, marker, action, timeout=900, new_session=False):
    """Run ``cmd``, call ``action(proc)`` when a line of its output contains ``marker``.

    ``new_session`` starts it in a process group of its own (``os.killpg(proc.pid, ...)``
    then reaches its data-loader workers too).

    Returns (return code, whole output).
    """
    env = dict(ENV, PYTHONUNBUFFERED='1')
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=new_session)
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    lines, fired = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if not fired and marker in line:
                fired = True
                action(proc)
        proc.wait()
    finally:
        watchdog.cancel()
    out = ''.join(lines)
    assert fired, f'{marker!r} never appeared:\n{out[-3000:]}'
    return proc.returncode, out


def load(path):
    return load_local_checkpoint(path, map_location='cpu')


def assert_same_training_state(path_a, path_b):
    a, b = load(path_a), load(path_b)
    assert a['meta']['epoch'] == b['meta']['epoch'] and a['meta']['iter'] == b['meta']['iter']
    assert a['state_dict'].keys() == b['state_dict'].keys()
    differ = [k for k in a['state_dict'] if not torch.equal(a['state_dict'][k],
                                                            b['state_dict'][k])]
    assert not differ, f'{len(differ)} of {len(a["state_dict"])} tensors differ: {differ[:5]}'
    state_a, state_b = a['optimizer']['state'], b['optimizer']['state']
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        for name, value in state_a[key].items():
            assert torch.equal(value, state_b[key][name]), (key, name)


def pointer(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


# ------------------------------------------------------------------------------------------
# atomic writes, in isolation
# ------------------------------------------------------------------------------------------

def test_import_installs_the_atomic_backends():
    assert type(get_file_backend('/some/file.pth')) is AtomicLocalBackend
    assert type(get_file_backend('x.pth', backend_args=dict(backend='local'))) is \
        AtomicLocalBackend
    assert isinstance(FileClient.infer_client(None, '/some/file.pth').client,
                      AtomicHardDiskBackend)
    from mmengine.hooks import checkpoint_hook
    assert checkpoint_hook.CheckpointHook._save_checkpoint_with_step is save_then_prune
    assert checkpoint_hook.CheckpointHook._save_best_checkpoint._ms_rcnn_save_first


def test_atomic_write_replaces_content_and_keeps_mode_and_symlinks(tmp_path):
    target = tmp_path / 'sub' / 'epoch_1.pth'
    atomic_write(target, b'first')
    assert target.read_bytes() == b'first'
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    os.chmod(target, 0o640)
    AtomicLocalBackend().put(b'second', target)
    assert target.read_bytes() == b'second' and target.stat().st_mode & 0o777 == 0o640
    link = tmp_path / 'latest.pth'
    link.symlink_to(target)
    AtomicLocalBackend().put_text('third', link)
    assert link.is_symlink() and target.read_text() == 'third'
    assert sorted(os.listdir(tmp_path / 'sub')) == ['epoch_1.pth']


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'complete')

    def fail(fd):
        raise OSError('disk full')

    monkeypatch.setattr(os, 'fsync', fail)
    with pytest.raises(OSError, match='disk full'):
        atomic_write(target, b'new content')
    assert target.read_bytes() == b'complete' and os.listdir(tmp_path) == ['epoch_1.pth']


def test_temporaries_of_dead_writers_are_removed_by_the_next_write(tmp_path):
    dead = subprocess.Popen([PY, '-c', 'pass'])
    dead.wait()
    import socket
    host = socket.gethostname()
    stale = tmp_path / f'.epoch_2.pth.{host}.{dead.pid}.abc123.tmp'
    alive = tmp_path / f'.epoch_2.pth.{host}.{os.getppid()}.def456.tmp'
    other = tmp_path / f'.epoch_3.pth.{host}.{dead.pid}.abc123.tmp'
    for path in (stale, alive, other):
        path.write_bytes(b'partial')
    atomic_write(tmp_path / 'epoch_2.pth', b'data')
    assert not stale.exists() and alive.exists() and other.exists()


def test_a_name_as_long_as_open_takes_is_written_and_its_stale_files_found(tmp_path):
    """The temporary file's name adds host, pid and a random part: a long name is hashed."""
    from ms_rcnn.engine.atomic_io import _tmp_prefix
    name = 'm' * 240 + '.json'
    with open(tmp_path / name, 'w') as f:  # the premise: the file system takes the name
        f.write('plain')
    dead = subprocess.Popen([PY, '-c', 'pass'])
    dead.wait()
    prefix = _tmp_prefix(name)
    assert len(prefix) < 120 and prefix != _tmp_prefix('n' * 240 + '.json')
    stale = tmp_path / f'{prefix}{dead.pid}.abc123.tmp'
    stale.write_bytes(b'partial')
    atomic_write(tmp_path / name, 'atomic')
    assert (tmp_path / name).read_text() == 'atomic'
    assert sorted(os.listdir(tmp_path)) == [name]
    assert _tmp_prefix('epoch_2.pth').startswith('.epoch_2.pth.')  # short names stay readable


SAVE_UNDER_LIMIT = r'''
import resource, signal, sys
import torch
if sys.argv[2] == 'ms_rcnn':
    import ms_rcnn  # noqa: F401
from mmengine.runner.checkpoint import save_checkpoint
checkpoint = {'state_dict': {'w': torch.arange(4_000_000, dtype=torch.float32)}}  # 16 MB
if sys.argv[3] == 'killed':
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
save_checkpoint(checkpoint, sys.argv[1])
'''


@pytest.mark.skipif(resource is None, reason='needs POSIX resource limits')
@pytest.mark.parametrize('crash', ['killed', 'error'])
@pytest.mark.parametrize('stack', ['ms_rcnn', 'mmengine'])
def test_checkpoint_write_interrupted_halfway(tmp_path, stack, crash):
    """A write cut off at 4 MB of 16 MB: by SIGXFSZ (killed) or by EFBIG (an exception).

    mmengine alone leaves a truncated file under the final name (the control); with ms_rcnn
    imported the final name never appears.
    """
    final = tmp_path / 'epoch_1.pth'
    proc = subprocess.run([PY, '-c', SAVE_UNDER_LIMIT, str(final), stack, crash],
                          capture_output=True, text=True, timeout=300)
    if crash == 'killed':
        assert proc.returncode == -signal.SIGXFSZ, proc.stderr[-2000:]
    else:
        assert proc.returncode == 1 and 'File too large' in proc.stderr, proc.stderr[-2000:]
    if stack == 'mmengine':
        assert final.stat().st_size == 4 << 20  # truncated, where resume would find it
        return
    assert not final.exists()
    leftovers = os.listdir(tmp_path)
    if crash == 'killed':  # no chance to clean up: a hidden temporary remains
        assert len(leftovers) == 1 and leftovers[0].startswith('.epoch_1.pth.')
        assert (tmp_path / leftovers[0]).stat().st_size == 4 << 20
    else:
        assert leftovers == []


POINTER_KILLED = r'''
import os, signal, sys
path, stack = sys.argv[1:]
if stack == 'ms_rcnn':  # how save_then_prune writes the pointer, killed before the rename
    from ms_rcnn.engine import atomic_write
    os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
    atomic_write(path, '/work_dir/epoch_2.pth')
else:  # how mmengine's CheckpointHook._save_checkpoint_with_step writes it
    with open(path, 'w') as f:
        f.write('/work_dir/epoch_2.pth')
        os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.parametrize('stack', ['ms_rcnn', 'mmengine'])
def test_pointer_write_killed_halfway(tmp_path, stack):
    path = tmp_path / 'last_checkpoint'
    path.write_text('/work_dir/epoch_1.pth')
    proc = subprocess.run([PY, '-c', POINTER_KILLED, str(path), stack], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    if stack == 'mmengine':
        assert path.read_text() == ''  # open(..., 'w') truncated it: --resume would fail
    else:
        assert path.read_text() == '/work_dir/epoch_1.pth'
        assert len(os.listdir(tmp_path)) == 2  # and the killed writer's temporary file


def test_rng_state_round_trips_through_a_safely_loaded_checkpoint(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    state = capture_rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    path = tmp_path / 'ckpt.pth'
    torch.save({'rng_state': dict(world_size=1, ranks=[state])}, path)
    loaded = load_local_checkpoint(str(path))  # weights_only=True
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    restore_rng_state(loaded['rng_state']['ranks'][0])
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1]) and random.random() == expected[2]


@pytest.mark.parametrize('persistent, num_workers, warned', [
    (True, 2, True), (False, 2, False), (True, 0, False)])
def test_resume_warns_about_persistent_workers(persistent, num_workers, warned):
    from types import SimpleNamespace
    from unittest import mock

    from ms_rcnn.engine import RNGStateHook
    hook = RNGStateHook()
    loader = SimpleNamespace(persistent_workers=persistent, num_workers=num_workers)
    runner = SimpleNamespace(iter=4, hooks=[], logger=mock.Mock(),
                             train_loop=SimpleNamespace(dataloader=loader))
    hook.after_load_checkpoint(runner, dict(
        rng_state=dict(world_size=1, ranks=[capture_rng_state()]), meta=dict(iter=4)))
    hook.before_train(runner)
    runner.logger.info.assert_called_once()  # restored
    messages = [c.args[0] for c in runner.logger.warning.call_args_list]
    assert any('persistent_workers' in m for m in messages) == warned


@pytest.mark.parametrize('runner_iter, saved_world_size, restored', [
    (4, 1, True),    # resumed at the checkpoint's iteration
    (0, 1, False),   # load_from: a fresh run from the weights keeps its own seeds
    (4, 2, False),   # states of two processes, this run has one: none restored, a warning
])
def test_generators_are_restored_only_on_a_resume_of_the_same_world_size(
        runner_iter, saved_world_size, restored):
    from types import SimpleNamespace
    from unittest import mock

    from ms_rcnn.engine import RNGStateHook
    torch.manual_seed(7)
    saved = capture_rng_state()
    expected = torch.rand(3)
    torch.manual_seed(0)  # this run's own seed
    runner = SimpleNamespace(iter=runner_iter, hooks=[], logger=mock.Mock(),
                             train_loop=SimpleNamespace(dataloader=None))
    hook = RNGStateHook()
    hook.after_load_checkpoint(runner, dict(
        rng_state=dict(world_size=saved_world_size, ranks=[saved] * saved_world_size),
        meta=dict(iter=4)))
    hook.before_train(runner)
    assert torch.equal(torch.rand(3), expected) == restored
    warned = [c.args[0] for c in runner.logger.warning.call_args_list]
    assert any('for 2 processes, this run has 1' in m for m in warned) == \
        (saved_world_size == 2)


def test_distributed_states_are_gathered_only_where_a_checkpoint_is_saved(monkeypatch):
    # Two ranks, faked: every gather is recorded with the iterations done at that point.
    from types import SimpleNamespace
    from unittest import mock

    from mmengine.hooks import CheckpointHook

    from ms_rcnn.engine import RNGStateHook, hooks as hooks_module
    gathered = []
    monkeypatch.setattr(hooks_module, 'get_world_size', lambda: 2)
    monkeypatch.setattr(hooks_module, 'all_gather_object',
                        lambda state: gathered.append(runner.iter) or [state, state])
    runner = SimpleNamespace(iter=0, max_iters=10, logger=mock.Mock(), hooks=[
        CheckpointHook(interval=4, by_epoch=False, save_begin=0),
        CheckpointHook(interval=3, by_epoch=False, save_begin=5, save_last=False)])
    hook = RNGStateHook()
    hook.before_train(runner)
    for runner.iter in range(10):
        hook.after_train_iter(runner, runner.iter)
    # Interval 4 with the last iteration (4, 8, 10) and interval 3 from iteration 5 (5, 8): the
    # gather runs before the loop counts the iteration, so runner.iter is one less.
    assert gathered == [3, 4, 7, 9]
    checkpoint = dict(meta=dict(iter=10))
    hook.before_save_checkpoint(runner, checkpoint)
    assert checkpoint['rng_state']['world_size'] == 2 and len(checkpoint['rng_state']['ranks']) == 2
    stale = dict(meta=dict(iter=9))
    hook.before_save_checkpoint(runner, stale)
    assert 'rng_state' not in stale and 'iteration 9' in runner.logger.warning.call_args.args[0]
    # No gathering after validation unless a CheckpointHook keeps the best checkpoint; then the
    # states are those from before validation, which training goes on from.
    runner.iter = 10
    hook.before_val(runner)
    hook.after_val_epoch(runner, {})
    assert gathered == [3, 4, 7, 9]
    torch.rand(1)  # validation draws
    runner.hooks.append(CheckpointHook(interval=1, by_epoch=False, save_best='auto'))
    hook.before_train(runner)
    hook.after_val_epoch(runner, {})
    hook.after_val(runner)
    assert gathered == [3, 4, 7, 9, 10]
    best = dict(meta=dict(iter=10))
    hook.before_save_checkpoint(runner, best)
    assert torch.equal(best['rng_state']['ranks'][0]['torch'], torch.get_rng_state())


@pytest.mark.parametrize('train_cfg, checkpoint_cfg', [
    (dict(by_epoch=True, max_epochs=3, val_interval=1), dict(interval=1, save_best='acc')),
    (dict(by_epoch=True, max_epochs=3, val_interval=1),
     dict(interval=3, by_epoch=False, save_best='acc')),
    (dict(type='IterBasedTrainLoop', max_iters=12, val_interval=4),
     dict(interval=4, by_epoch=False, save_begin=5, save_best='acc')),
    (dict(type='IterBasedTrainLoop', max_iters=7, val_interval=3),
     dict(interval=-1, by_epoch=False, save_last=True)),
], ids=['epochs', 'epochs_iter_ckpt', 'iters_best', 'iters_last_only'])
def test_every_checkpoint_of_a_distributed_run_holds_the_states(train_cfg, checkpoint_cfg,
                                                                tmp_path, monkeypatch):
    # mmengine's own loops and CheckpointHook on a tiny model, with two ranks faked: each saved
    # checkpoint (periodic, last, best) must hold generator states gathered for its iteration.
    from mmengine.evaluator import BaseMetric
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    from ms_rcnn.engine import RNGStateHook, hooks as hooks_module

    class Line(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(1, 1)

        def forward(self, x, mode='tensor'):
            out = self.fc(torch.stack(x) if isinstance(x, list) else x)
            return dict(loss=out.square().mean()) if mode == 'loss' else list(out)

    class RandomScore(BaseMetric):
        def process(self, data_batch, data_samples):
            self.results.append(0)

        def compute_metrics(self, results):
            return dict(acc=float(torch.rand(1)))

    gathers, saves = [], []
    monkeypatch.setattr(hooks_module, 'get_world_size', lambda: 2)
    monkeypatch.setattr(hooks_module, 'all_gather_object',
                        lambda state: gathers.append(state) or [state, state])
    hook = RNGStateHook()
    save = hook.before_save_checkpoint

    def recording_save(runner, checkpoint):
        save(runner, checkpoint)
        saves.append((checkpoint['meta']['iter'], 'rng_state' in checkpoint))

    monkeypatch.setattr(hook, 'before_save_checkpoint', recording_save)
    loader = dict(dataset=[dict(x=torch.ones(1)) for _ in range(5)], batch_size=1,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    runner = Runner(model=Line(), work_dir=str(tmp_path), train_dataloader=loader,
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                    train_cfg=train_cfg, val_dataloader=loader, val_cfg=dict(),
                    val_evaluator=[RandomScore()],
                    default_hooks=dict(checkpoint=dict(type='CheckpointHook', **checkpoint_cfg)),
                    custom_hooks=[hook], log_level='ERROR', experiment_name=tmp_path.name)
    runner.train()
    assert saves and all(held for _, held in saves), saves
    assert len(gathers) < runner.iter  # not every iteration


def test_small_data_configs_resume_exactly():
    from mmengine.config import Config
    for name in ('ms-rcnn_r18_fpn_balloon.py', 'ms-rcnn_r18_fpn_coco-person.py'):
        cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'small_data', name))
        assert cfg.train_dataloader.persistent_workers is False, name
        assert any(h.type == 'ms_rcnn.RNGStateHook' for h in cfg.custom_hooks), name


# ------------------------------------------------------------------------------------------
# training killed and resumed
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def data8(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('toy8'))
    make_toy_coco(root, num_images=8)
    return root


@pytest.fixture(scope='module')
def resumable_config(tmp_path_factory):
    """The toy config plus RNGStateHook (mmengine does not checkpoint the generators)."""
    path = tmp_path_factory.mktemp('cfg') / 'toy_resumable.py'
    path.write_text(f"_base_ = {TOY_CONFIG!r}\n"
                    "custom_hooks = [dict(type='ms_rcnn.RNGStateHook')]\n")
    return str(path)


@pytest.fixture(scope='module')
def uninterrupted(resumable_config, data8, tmp_path_factory):
    work_dir = str(tmp_path_factory.mktemp('uninterrupted'))
    run(train_cmd(resumable_config, data8, work_dir))
    return work_dir


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_bit_identical_weights(
        uninterrupted, resumable_config, data8, tmp_path):
    work_dir = str(tmp_path / 'killed')
    seen = {}

    def kill(proc):
        seen['epoch_1'] = osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
        proc.send_signal(signal.SIGKILL)

    returncode, out = run_until(train_cmd(resumable_config, data8, work_dir),
                                f'Epoch(train) [2][1/{ITERS_PER_EPOCH}]', kill)
    assert returncode == -signal.SIGKILL
    assert seen['epoch_1'] and not osp.exists(osp.join(work_dir, 'epoch_2.pth')), \
        'the kill was meant to land in the middle of epoch 2'
    assert pointer(work_dir) == osp.join(work_dir, 'epoch_1.pth')

    out = run(train_cmd(resumable_config, data8, work_dir, '--resume'))
    assert f'resumed epoch: 1, iter: {ITERS_PER_EPOCH}' in out
    assert 'RNGStateHook: restored the random generators' in out
    assert f'Epoch(train) [1][1/{ITERS_PER_EPOCH}]' not in out
    assert_same_training_state(osp.join(work_dir, f'epoch_{EPOCHS}.pth'),
                               osp.join(uninterrupted, f'epoch_{EPOCHS}.pth'))


@pytest.mark.slow
def test_resume_is_exact_with_workers_and_random_augmentation(data8, tmp_path):
    # Two non-persistent workers seeded from torch (as the small_data configs do), random
    # flips and resizes: the resumed run still ends with the uninterrupted run's weights.
    config = tmp_path / 'toy_workers.py'
    config.write_text(
        f"_base_ = {TOY_CONFIG!r}\n"
        "custom_hooks = [dict(type='ms_rcnn.RNGStateHook')]\n"
        "train_dataloader = dict(num_workers=2, persistent_workers=False,\n"
        "    worker_init_fn=dict(type='ms_rcnn.seed_worker_from_torch'),\n"
        "    sampler=dict(type='DefaultSampler', shuffle=True),\n"
        "    dataset=dict(pipeline=[dict(type='LoadImageFromFile'),\n"
        "        dict(type='LoadAnnotations', with_bbox=True, with_mask=True),\n"
        "        dict(type='RandomResize', scale=(128, 96), ratio_range=(0.7, 1.3),\n"
        "             keep_ratio=True),\n"
        "        dict(type='RandomFlip', prob=0.5), dict(type='PackDetInputs')]))\n")
    straight = str(tmp_path / 'straight')
    run(train_cmd(str(config), data8, straight))
    work_dir = str(tmp_path / 'killed')
    # The whole job is killed, as a scheduler does: workers of a lone killed main process can
    # block forever on a full queue to it (torch's behaviour), holding the output pipe open.
    returncode, _ = run_until(train_cmd(str(config), data8, work_dir),
                              f'Epoch(train) [2][1/{ITERS_PER_EPOCH}]',
                              lambda proc: os.killpg(proc.pid, signal.SIGKILL), new_session=True)
    assert returncode == -signal.SIGKILL
    out = run(train_cmd(str(config), data8, work_dir, '--resume'))
    assert 'RNGStateHook: restored the random generators' in out
    assert 'persistent_workers is True' not in out  # no warning
    assert_same_training_state(osp.join(work_dir, f'epoch_{EPOCHS}.pth'),
                               osp.join(straight, f'epoch_{EPOCHS}.pth'))


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(resource, 'prlimit'), reason='needs Linux prlimit')
def test_crash_while_writing_a_checkpoint_then_resume(uninterrupted, resumable_config, data8,
                                                      tmp_path):
    """The kernel kills training halfway through writing epoch_2.pth; --resume must take
    epoch_1.pth, and finish with the uninterrupted run's weights."""
    work_dir = str(tmp_path / 'crashed')
    limit = osp.getsize(osp.join(uninterrupted, 'epoch_2.pth')) // 2

    def limit_file_size(proc):  # logs stay far below the limit; the checkpoint does not
        assert osp.isfile(osp.join(work_dir, 'epoch_1.pth'))
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, limit))

    cmd = [PY, '-c', KILLED_BY_FILE_SIZE] + train_cmd(resumable_config, data8, work_dir)[1:]
    returncode, out = run_until(cmd, f'Epoch(train) [2][1/{ITERS_PER_EPOCH}]', limit_file_size)
    assert returncode == -signal.SIGXFSZ, out[-3000:]
    assert 'Saving checkpoint at 2 epochs' in out
    assert not osp.exists(osp.join(work_dir, 'epoch_2.pth'))
    partial = glob.glob(osp.join(work_dir, '.epoch_2.pth.*.tmp'))
    assert len(partial) == 1 and osp.getsize(partial[0]) == limit
    assert pointer(work_dir) == osp.join(work_dir, 'epoch_1.pth')
    assert load(osp.join(work_dir, 'epoch_1.pth'))['meta']['iter'] == ITERS_PER_EPOCH

    out = run(train_cmd(resumable_config, data8, work_dir, '--resume'))
    assert f'resumed epoch: 1, iter: {ITERS_PER_EPOCH}' in out
    assert_same_training_state(osp.join(work_dir, f'epoch_{EPOCHS}.pth'),
                               osp.join(uninterrupted, f'epoch_{EPOCHS}.pth'))
    assert not glob.glob(osp.join(work_dir, '.*.tmp'))  # the stale partial file was removed
    assert pointer(work_dir) == osp.join(work_dir, f'epoch_{EPOCHS}.pth')


@pytest.mark.slow
def test_resume_without_rng_state_hook_is_not_exact(uninterrupted, data8, tmp_path):
    """mmengine alone re-seeds on resume, so RoI/RPN sampling draws other numbers: the weights
    differ from the uninterrupted run's (this is why RNGStateHook exists)."""
    work_dir = str(tmp_path / 'plain')
    os.makedirs(work_dir)
    shutil.copy(osp.join(uninterrupted, 'epoch_1.pth'), work_dir)
    with open(osp.join(work_dir, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(work_dir, 'epoch_1.pth'))
    # The small-data configs enable RNGStateHook; switch it off (appended to --cfg-options).
    out = run(train_cmd(TOY_CONFIG, data8, work_dir, '--resume') + ['custom_hooks=[]'])
    assert f'resumed epoch: 1, iter: {ITERS_PER_EPOCH}' in out and 'RNGStateHook' not in out
    resumed = load(osp.join(work_dir, f'epoch_{EPOCHS}.pth'))['state_dict']
    reference = load(osp.join(uninterrupted, f'epoch_{EPOCHS}.pth'))['state_dict']
    assert any(not torch.equal(resumed[k], reference[k]) for k in reference)


class _SavingRunner:
    """What CheckpointHook needs of a runner; save_checkpoint can be made to crash."""

    def __init__(self, work_dir):
        from mmengine.logging import MessageHub, MMLogger
        self.work_dir = work_dir
        self.message_hub = MessageHub.get_instance(f'saving_runner_{id(self)}')
        self.logger = MMLogger.get_instance('saving_runner')
        self.crash = False

    def save_checkpoint(self, out_dir, filename, *args, **kwargs):
        if self.crash:
            raise OSError('No space left on device')  # what a full disk raises mid-save
        atomic_write(osp.join(out_dir, filename), b'checkpoint ' + filename.encode())


def test_checkpoint_hook_saves_before_it_prunes(tmp_path):
    """With max_keep_ckpts=1, mmengine deleted the only checkpoint before saving the next one;
    a crash while saving then left nothing to resume from."""
    from mmengine.hooks import CheckpointHook
    work_dir = str(tmp_path)
    runner = _SavingRunner(work_dir)
    hook = CheckpointHook(interval=1, max_keep_ckpts=1)
    hook.before_train(runner)
    hook._save_checkpoint_with_step(runner, 1, meta={})
    hook._save_checkpoint_with_step(runner, 2, meta={})
    assert sorted(os.listdir(work_dir)) == ['epoch_2.pth', 'last_checkpoint']
    assert pointer(work_dir) == osp.join(work_dir, 'epoch_2.pth')
    assert runner.message_hub.get_info('keep_ckpt_ids') == [2]

    runner.crash = True
    with pytest.raises(OSError, match='No space left'):
        hook._save_checkpoint_with_step(runner, 3, meta={})
    assert sorted(os.listdir(work_dir)) == ['epoch_2.pth', 'last_checkpoint']
    assert pointer(work_dir) == osp.join(work_dir, 'epoch_2.pth')


def test_checkpoint_hook_saves_the_new_best_before_it_removes_the_old_one(tmp_path):
    """mmengine deleted the previous best checkpoint before saving the new one; a crash while
    saving then left no best checkpoint at all."""
    from mmengine.hooks import CheckpointHook
    work_dir = str(tmp_path)
    runner = _SavingRunner(work_dir)
    hook = CheckpointHook(interval=1, max_keep_ckpts=1, save_best='segm_mAP', rule='greater')
    hook.before_train(runner)

    def evaluate(epoch, score):
        runner.epoch = runner.iter = epoch
        hook._save_checkpoint_with_step(runner, epoch, meta={})
        hook._save_best_checkpoint(runner, dict(segm_mAP=score))

    evaluate(1, 0.3)
    evaluate(2, 0.5)  # better: the old best goes, after the new one is saved
    assert sorted(os.listdir(work_dir)) == ['best_segm_mAP_epoch_2.pth', 'epoch_2.pth',
                                            'last_checkpoint']
    evaluate(3, 0.4)  # worse: the best stays
    assert sorted(os.listdir(work_dir)) == ['best_segm_mAP_epoch_2.pth', 'epoch_3.pth',
                                            'last_checkpoint']
    runner.epoch = runner.iter = 4
    runner.crash = True
    with pytest.raises(OSError, match='No space left'):
        hook._save_best_checkpoint(runner, dict(segm_mAP=0.6))
    assert sorted(os.listdir(work_dir)) == ['best_segm_mAP_epoch_2.pth', 'epoch_3.pth',
                                            'last_checkpoint']  # the old best is kept


# ------------------------------------------------------------------------------------------
# data-loader worker seeds
# ------------------------------------------------------------------------------------------

class RandomDraws(torch.utils.data.Dataset):
    """Each item is what an augmentation would draw: numpy, random and torch numbers."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return (np.random.randint(1 << 30), random.randrange(1 << 30),
                int(torch.randint(1 << 30, ())))


def epochs_of_draws(worker_init_fn, num_epochs=2):
    from mmengine.runner import Runner
    loader_cfg = dict(dataset=RandomDraws(), batch_size=1, num_workers=2,
                      persistent_workers=False, sampler=dict(type='DefaultSampler',
                                                             shuffle=False))
    if worker_init_fn is not None:
        loader_cfg['worker_init_fn'] = dict(type=worker_init_fn)
    loader = Runner.build_dataloader(loader_cfg, seed=0)
    # pseudo_collate turns a batch of one (a, b, c) into ([a], [b], [c])
    return [[tuple(field[0] for field in batch) for batch in loader] for _ in range(num_epochs)]


def test_worker_seeds_change_every_epoch_and_follow_the_main_generator():
    torch.manual_seed(5)
    first, second = epochs_of_draws('ms_rcnn.seed_worker_from_torch')
    assert first != second
    assert len({draw for draw in first}) == 4
    torch.manual_seed(5)  # what RNGStateHook restores on resume
    assert epochs_of_draws('ms_rcnn.seed_worker_from_torch') == [first, second]


def test_worker_seeds_differ_between_ranks(monkeypatch):
    # Every rank seeds its main generator alike (diff_rank_seed=False), so without the rank
    # the i-th sample of every rank would get the same augmentation. Workers inherit RANK.
    draws = {}
    for rank in ('0', '1', '0'):
        monkeypatch.setenv('RANK', rank)
        torch.manual_seed(5)
        draws.setdefault(rank, []).append(epochs_of_draws('ms_rcnn.seed_worker_from_torch'))
    assert draws['0'][0] == draws['0'][1]
    for epoch_0, epoch_1 in zip(draws['0'][0], draws['1'][0]):
        for draw_0, draw_1 in zip(epoch_0, epoch_1):
            # numpy, random and torch draws all differ
            assert all(a != b for a, b in zip(draw_0, draw_1)), (draw_0, draw_1)


def test_worker_seed_mixes_the_rank_into_the_full_seed_range():
    from ms_rcnn.engine.worker_seed import worker_seed
    seeds = {worker_seed(torch_seed, rank) for torch_seed in (0, 1, 2**64 - 1)
             for rank in range(4)}
    assert len(seeds) == 12
    assert all(0 <= seed < 2**64 for seed in seeds)
    assert worker_seed(7, 2) == worker_seed(7, 2)


def test_mmengines_default_worker_seeds_repeat_every_epoch():
    # Why the small_data configs set seed_worker_from_torch with non-persistent workers.
    first, second = epochs_of_draws(None)
    assert first == second


def test_small_data_configs_seed_workers_from_torch():
    from mmengine.config import Config
    for name in ('ms-rcnn_r18_fpn_balloon.py', 'ms-rcnn_r18_fpn_coco-person.py',
                 'ms-rcnn_r18_fpn_nuclei-demo.py'):
        cfg = Config.fromfile(osp.join(REPO_ROOT, 'configs', 'small_data', name))
        loader = cfg.train_dataloader
        assert loader.worker_init_fn.type == 'ms_rcnn.seed_worker_from_torch', name
        assert loader.persistent_workers is False, name
