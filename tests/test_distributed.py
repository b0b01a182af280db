"""Distributed training and testing on the CPU (gloo), with 2 processes.

Launchers: torchrun (``python -m torch.distributed.run``), ``mim train --launcher pytorch``
(``torch.distributed.launch``) and ``tools/slurm_{train,test}.sh`` under a stand-in ``srun``
that starts the tasks locally with the SLURM_* variables a real ``srun`` sets.
"""
import os
import os.path as osp
import pickle
import shutil
import socket
import stat
import subprocess
import sys

import pytest
import torch
from torch import distributed as torch_dist

import ms_rcnn  # noqa: F401  installs the CPU launcher fixes
from ms_rcnn.testing import REPO_ROOT
from ms_rcnn.utils.checkpoint import load_local_checkpoint

from .conftest import TOY_CONFIG

PY = sys.executable
MIM = osp.join(osp.dirname(sys.executable), 'mim')
NPROC = 2
NUM_VAL_IMAGES = 4  # make_toy_coco's default
NO_VAL = ['val_cfg=None', 'val_dataloader=None', 'val_evaluator=None']

FAKE_SRUN = r'''#!{python}
"""Stand-in for slurm's srun: run --ntasks copies of the command on this host."""
import os, subprocess, sys, time
args = sys.argv[1:]
with open(os.environ['FAKE_SRUN_LOG'], 'w') as f:
    f.write('\n'.join(args))
ntasks, i = 1, 0
while args[i].startswith('-'):
    if args[i].startswith('--ntasks='):
        ntasks = int(args[i].split('=', 1)[1])
    i += 2 if args[i] in ('-p', '-J', '-n') else 1
command = args[i:]
procs = [subprocess.Popen(command, env=dict(
    os.environ, SLURM_PROCID=str(r), SLURM_LOCALID=str(r), SLURM_NTASKS=str(ntasks),
    SLURM_NODELIST='localhost', MASTER_ADDR='127.0.0.1')) for r in range(ntasks)]
while True:  # --kill-on-bad-exit
    codes = [p.poll() for p in procs]
    if any(c not in (None, 0) for c in codes) or all(c == 0 for c in codes):
        break
    time.sleep(0.2)
for p in procs:
    if p.poll() is None:
        p.kill()
sys.exit(max(abs(p.wait()) for p in procs))
'''


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def run(cmd, env=None, cwd=REPO_ROOT, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f'{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}'
    return proc.stdout + proc.stderr


def torchrun(script, *args):
    return [PY, '-m', 'torch.distributed.run', f'--nproc_per_node={NPROC}',
            '--master_addr=127.0.0.1', f'--master_port={free_port()}', script, *args,
            '--launcher', 'pytorch']


def assert_ranks_agree(work_dir, checkpoint):
    """Every rank dumped its weights (DumpRankWeightsHook); they equal each other and the
    checkpoint rank 0 saved."""
    dumps = [load_local_checkpoint(osp.join(work_dir, 'rank_weights', f'rank_{r}.pth'))
             for r in range(NPROC)]
    assert [d['rank'] for d in dumps] == list(range(NPROC))
    assert all(d['world_size'] == NPROC for d in dumps)
    saved = load_local_checkpoint(checkpoint)['state_dict']
    for dump in dumps:
        assert dump['iter'] == dumps[0]['iter'] and dump['state_dict'].keys() == saved.keys()
        differ = [k for k in saved if not torch.equal(dump['state_dict'][k], saved[k])]
        assert not differ, f'rank {dump["rank"]} differs from the checkpoint in {differ[:5]}'


@pytest.fixture(scope='module')
def dist_config(tmp_path_factory):
    path = tmp_path_factory.mktemp('cfg') / 'toy_dist.py'
    path.write_text(f"_base_ = {TOY_CONFIG!r}\n"
                    "custom_hooks = [dict(type='ms_rcnn.DumpRankWeightsHook'),\n"
                    "                dict(type='ms_rcnn.RNGStateHook')]\n")
    return str(path)


@pytest.fixture(scope='module')
def dist_trained(dist_config, toy_root, tmp_path_factory):
    """3 epochs on 2 processes: 4 images / (2 ranks x batch 2) = 1 iteration per epoch."""
    work_dir = str(tmp_path_factory.mktemp('dist_train'))
    out = run(torchrun('tools/train.py', dist_config, '--data-root', toy_root, '--work-dir',
                       work_dir, '--cfg-options', 'train_cfg.max_epochs=3', *NO_VAL))
    return work_dir, out


# ------------------------------------------------------------------------------------------
# the CPU fixes in isolation (fast)
# ------------------------------------------------------------------------------------------

def test_ddp_wrapper_accepts_a_cpu_module_with_device_ids(tmp_path):
    """mmengine passes device_ids=[LOCAL_RANK]; torch refuses that for a CPU module."""
    from mmengine.model import MMDistributedDataParallel
    torch_dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0,
                                  world_size=1)
    try:
        model = MMDistributedDataParallel(module=torch.nn.Linear(2, 2), device_ids=[0],
                                          broadcast_buffers=False)
        assert model.device_ids is None
        assert model(torch.ones(1, 2)).shape == (1, 2)
    finally:
        torch_dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the path without a GPU')
def test_launchers_do_not_pin_a_cuda_device_without_one(monkeypatch):
    from mmengine.dist import utils as dist_utils
    calls = []
    monkeypatch.setattr(torch_dist, 'init_process_group',
                        lambda backend, **kwargs: calls.append((backend, kwargs)))
    for key in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.setenv(key, '0')  # restored afterwards: mmengine's slurm set-up writes them
    monkeypatch.setenv('LOCAL_RANK', '1')
    dist_utils._init_dist_pytorch('gloo')
    for key, value in dict(SLURM_PROCID='1', SLURM_NTASKS='2', SLURM_LOCALID='1',
                           SLURM_NODELIST='localhost', MASTER_ADDR='127.0.0.1',
                           MASTER_PORT='29999').items():
        monkeypatch.setenv(key, value)
    with pytest.warns(UserWarning, match='backend is gloo instead of nccl'):
        dist_utils._init_dist_slurm('nccl')  # the default of mmdet's configs needs GPUs
    assert (os.environ['RANK'], os.environ['WORLD_SIZE'], os.environ['LOCAL_RANK']) == \
        ('1', '2', '1')
    for key, value in dict(OMPI_COMM_WORLD_LOCAL_RANK='1', OMPI_COMM_WORLD_SIZE='4',
                           OMPI_COMM_WORLD_RANK='3').items():
        monkeypatch.setenv(key, value)
    with pytest.warns(UserWarning, match='backend is gloo instead of nccl'):
        dist_utils._init_dist_mpi('nccl')  # what `--launcher mpi` runs under mpirun
    assert (os.environ['RANK'], os.environ['WORLD_SIZE']) == ('3', '4')
    assert calls == [('gloo', {}), ('gloo', {}), ('gloo', {})]
    assert torch.cuda.set_device.__module__ == 'torch.cuda'  # restored after the call


# ------------------------------------------------------------------------------------------
# end to end, 2 processes
# ------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_training_keeps_ranks_identical(dist_trained):
    work_dir, out = dist_trained
    assert 'Epoch(train) [3][1/1]' in out and '[1][2/' not in out  # the data were split
    assert_ranks_agree(work_dir, osp.join(work_dir, 'epoch_3.pth'))


@pytest.mark.slow
def test_torchrun_resume_restores_each_ranks_generators(dist_trained, dist_config, toy_root,
                                                        tmp_path):
    """Resuming the 2-process run from epoch 1 reproduces its epoch-3 weights exactly; the
    checkpoint holds one generator state per rank (they differ: each rank sampled its own
    proposals)."""
    work_dir, _ = dist_trained
    saved = load_local_checkpoint(osp.join(work_dir, 'epoch_1.pth'))['rng_state']
    assert saved['world_size'] == NPROC and len(saved['ranks']) == NPROC
    assert not torch.equal(saved['ranks'][0]['torch'], saved['ranks'][1]['torch'])
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    shutil.copy(osp.join(work_dir, 'epoch_1.pth'), resumed)
    (resumed / 'last_checkpoint').write_text(str(resumed / 'epoch_1.pth'))
    out = run(torchrun('tools/train.py', dist_config, '--data-root', toy_root, '--work-dir',
                       str(resumed), '--resume', '--cfg-options', 'train_cfg.max_epochs=3',
                       *NO_VAL))
    assert 'resumed epoch: 1, iter: 1' in out and 'RNGStateHook: restored' in out
    assert_ranks_agree(str(resumed), osp.join(work_dir, 'epoch_3.pth'))


@pytest.mark.slow
def test_torchrun_testing_gathers_predictions_of_both_ranks(dist_trained, toy_root, tmp_path):
    # Through tools/dist_test.sh, run from another directory with paths relative to it.
    work_dir, _ = dist_trained
    (tmp_path / 'my_config.py').write_text(f'_base_ = {TOY_CONFIG!r}\n')
    env = dict(os.environ, PYTHON=PY, PORT=str(free_port()))
    out = run(['bash', osp.join(REPO_ROOT, 'tools', 'dist_test.sh'), 'my_config.py',
               osp.join(work_dir, 'epoch_3.pth'), str(NPROC), '--data-root', toy_root,
               '--work-dir', 'wd', '--out', 'preds.pkl'], env=env, cwd=str(tmp_path))
    out_file = str(tmp_path / 'preds.pkl')
    assert (tmp_path / 'wd').is_dir()
    # each rank ran 2 of the 4 images (batch size 1); rank 0 dumped all 4
    assert f'Epoch(test) [{NUM_VAL_IMAGES // NPROC}/{NUM_VAL_IMAGES // NPROC}]' in out
    assert f'[{NUM_VAL_IMAGES}/{NUM_VAL_IMAGES}]' not in out
    with open(out_file, 'rb') as f:
        preds = pickle.load(f)
    assert sorted(p['img_id'] for p in preds) == list(range(1, NUM_VAL_IMAGES + 1))
    assert all({'scores', 'bbox_scores', 'mask_ious'} <= set(p['pred_instances']) for p in preds)
    assert 'coco/segm_mAP' in out


@pytest.mark.slow
def test_mim_train_with_pytorch_launcher_on_cpu(dist_config, toy_root, tmp_path):
    """`mim train ... --launcher pytorch --gpus 2` runs `python -m torch.distributed.launch
    --nproc_per_node=2`; mim does not check for GPUs, so with gloo it trains on the CPU. Here
    with mmdet's default nccl backend, which ms_rcnn replaces by gloo without a GPU."""
    out = run([MIM, 'train', 'ms_rcnn', dist_config, '--launcher', 'pytorch', '--gpus',
               str(NPROC), '--port', str(free_port()), '--work-dir', str(tmp_path),
               '--data-root', toy_root, '--cfg-options', 'train_cfg.max_epochs=1',
               'env_cfg.dist_cfg.backend=nccl', *NO_VAL], cwd=str(tmp_path))
    assert 'torch.distributed.launch --nproc_per_node=2' in out
    assert out.count('the distributed backend is gloo instead of nccl') == NPROC
    assert 'Epoch(train) [1][1/1]' in out
    assert_ranks_agree(str(tmp_path), str(tmp_path / 'epoch_1.pth'))


@pytest.fixture
def fake_srun(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    srun = bin_dir / 'srun'
    srun.write_text(FAKE_SRUN.format(python=PY))
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / 'srun_args.txt'
    env = dict(os.environ, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', PYTHON=PY,
               FAKE_SRUN_LOG=str(log), GPUS=str(NPROC), GPUS_PER_NODE=str(NPROC),
               CPUS_PER_TASK='1', MASTER_PORT=str(free_port()),
               OMP_NUM_THREADS='1')  # as torchrun sets it; real srun would bind 1 CPU a task
    return env, log


@pytest.mark.slow
def test_slurm_scripts_train_and_test(dist_config, toy_root, tmp_path, fake_srun):
    env, log = fake_srun
    work_dir = str(tmp_path / 'work')
    out = run(['bash', 'tools/slurm_train.sh', 'gpu-partition', 'toy-job', dist_config,
               work_dir, '--data-root', toy_root, '--cfg-options', 'train_cfg.max_epochs=1',
               *NO_VAL], env=env)
    args = log.read_text().split('\n')
    assert args[:8] == ['-p', 'gpu-partition', '--job-name=toy-job', '--gres=gpu:2',
                        '--ntasks=2', '--ntasks-per-node=2', '--cpus-per-task=1',
                        '--kill-on-bad-exit=1']
    assert args[8:11] == [PY, '-u', osp.join(REPO_ROOT, 'tools', 'train.py')]
    assert '--launcher=slurm' in args and f'--work-dir={work_dir}' in args
    assert 'Epoch(train) [1][1/1]' in out
    assert_ranks_agree(work_dir, osp.join(work_dir, 'epoch_1.pth'))

    out_file = str(tmp_path / 'preds.pkl')
    env['MASTER_PORT'] = str(free_port())
    run(['bash', 'tools/slurm_test.sh', 'gpu-partition', 'toy-test', TOY_CONFIG,
         osp.join(work_dir, 'epoch_1.pth'), '--data-root', toy_root, '--work-dir', work_dir,
         '--out', out_file], env=env)
    assert log.read_text().split('\n')[10] == osp.join(REPO_ROOT, 'tools', 'test.py')
    with open(out_file, 'rb') as f:
        assert sorted(p['img_id'] for p in pickle.load(f)) == list(
            range(1, NUM_VAL_IMAGES + 1))
