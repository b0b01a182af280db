"""The shell tools: they parse, and tools/gpu_checks.sh runs its steps and records them.

The GPU checks themselves need a GPU; ``DEVICE=cpu`` rehearses the script's mechanics (set-up
check, steps under time limits, summary, exit status) with the environment of this run.
"""
import glob
import os
import os.path as osp
import shlex
import subprocess
import sys

import pytest
import torch

from ms_rcnn.testing import REPO_ROOT

SCRIPT = osp.join(REPO_ROOT, 'tools', 'gpu_checks.sh')


@pytest.mark.parametrize('path', sorted(glob.glob(osp.join(REPO_ROOT, 'tools', '*.sh'))),
                         ids=osp.basename)
def test_shell_scripts_parse(path):
    proc = subprocess.run(['bash', '-n', path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def run_checks(tmp_path, *steps, **extra_env):
    env = dict(os.environ, OUT=str(tmp_path / 'out'), DEVICE='cpu', PYTHON=sys.executable,
               SITE=str(tmp_path / 'site'), WHEELS=str(tmp_path / 'no_wheels'),
               OMP_NUM_THREADS='1')
    env.update(extra_env)
    return subprocess.run(['bash', SCRIPT, *steps], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def test_unknown_step_stops_before_anything_runs(tmp_path):
    proc = run_checks(tmp_path, 'targets', 'benchmark_everything')
    assert proc.returncode == 2
    assert "unknown step 'benchmark_everything'" in proc.stderr
    assert not (tmp_path / 'out').exists()


def test_rehearsal_records_each_step(tmp_path):
    proc = run_checks(tmp_path, 'setup', 'cuda_tests')
    assert proc.returncode == 0, proc.stdout[-3000:]
    summary = (tmp_path / 'out' / 'summary.txt').read_text().splitlines()
    assert [line.split()[:2] for line in summary] == [
        ['environment', 'ok'], ['setup', 'ok'], ['cuda_tests', 'ok']]
    log = (tmp_path / 'out' / 'log.txt').read_text()
    assert 'nothing to install' in log and 'ops run on cpu' in log
    assert f'torch {torch.__version__}' in log and 'cores' in log
    assert log.rstrip().endswith(summary[-1])  # the log is complete


def test_failed_step_sets_exit_status_and_later_steps_run(tmp_path):
    """A step that fails gives the script its exit status, and the steps after it run."""
    out = tmp_path / 'out'
    env_python = tmp_path / 'python'  # a PYTHON that fails for the benchmark scripts only
    env_python.write_text('#!/bin/sh\ncase "$1" in *bench_*) exit 7;; esac\n'
                          f'exec {shlex.quote(sys.executable)} "$@"\n')
    env_python.chmod(0o755)
    env = dict(os.environ, OUT=str(out), DEVICE='cpu', PYTHON=str(env_python),
               SITE=str(tmp_path / 'site'), WHEELS=str(tmp_path / 'no_wheels'))
    proc = subprocess.run(['bash', SCRIPT, 'targets', 'cuda_tests'], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 7
    status = {line.split()[0]: line.split()[1] for line in
              (out / 'summary.txt').read_text().splitlines()}
    assert status['targets'] == 'FAILED' and status['cuda_tests'] == 'ok'


def test_steps_are_cut_to_the_deadline(tmp_path):
    """Each step's limit shrinks to what is left before DEADLINE; what no longer fits is
    recorded as skipped, the exit status says so, and the log is still complete."""
    # A PYTHON whose set-up checks pass at once and whose tests hang.
    slow_python = tmp_path / 'python'
    slow_python.write_text('#!/bin/sh\ncase "$1$2" in\n  -mpytest) exec sleep 300;;\n'
                           '  -c*) exit 0;;\n  -) cat >/dev/null; exit 0;;\nesac\nexit 1\n')
    slow_python.chmod(0o755)
    proc = run_checks(tmp_path, 'cuda_tests', 'targets', DEADLINE='20',
                      PYTHON=str(slow_python))
    log = (tmp_path / 'out' / 'log.txt').read_text()
    limits = {line.split()[1]: int(line.split('limit ')[1].split('s)')[0])
              for line in log.splitlines() if line.startswith('=== ') and 'limit' in line}
    assert limits['environment'] == 20 and 15 <= limits['cuda_tests'] <= 20
    summary = [line.split()[:2] for line in
               (tmp_path / 'out' / 'summary.txt').read_text().splitlines()]
    assert summary == [['environment', 'ok'], ['setup', 'ok'], ['cuda_tests', 'TIMEOUT'],
                       ['targets', 'SKIPPED']]
    assert proc.returncode == 124
    assert log.rstrip().endswith('SKIPPED            0s')


def test_no_time_left_skips_everything(tmp_path):
    proc = run_checks(tmp_path, DEADLINE='0')
    summary = (tmp_path / 'out' / 'summary.txt').read_text().splitlines()
    assert [line.split()[:2] for line in summary] == [
        ['environment', 'SKIPPED'], ['setup', 'SKIPPED']]
    assert proc.returncode == 124
    assert 'set-up failed or was skipped: nothing else can run' in proc.stdout


@pytest.mark.parametrize('env, plan', [
    ({}, 'plan: cpu ops'),                                   # no GPU visible: as mmcv decides
    ({'FORCE_CUDA': '1'}, 'plan: cuda ops'),                 # a build host asks for them
    ({'TORCH_CUDA_ARCH_LIST': '9.0'}, 'plan: cuda ops'),
    ({'FAKE_GPU': '1'}, 'plan: cuda ops'),                   # a GPU is visible
    ({'FAKE_GPU': '1', 'NO_NVCC': '1'}, 'plan: cpu ops'),   # nothing to compile CUDA with
    ({'FAKE_GPU': '1', 'CUDA_OPS': 'nms roi_align'}, 'plan: cuda ops (nms roi_align)'),
    ({'CUDA_OPS': 'nms roi_align'}, 'plan: cpu ops, '),      # no CUDA ops: nothing to trim
])
def test_build_mmcv_builds_cuda_ops_only_where_they_are_wanted(tmp_path, env, plan):
    """A CUDA torch from PyPI on a machine without a GPU (and a CUDA toolkit) must get the CPU
    ops in minutes, not the CUDA ops of every architecture in hours."""
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(
        'import os, torch\n'
        "torch.version.cuda = '13.0'\n"
        "torch.cuda.is_available = lambda: os.environ.get('FAKE_GPU') == '1'\n"
        'torch.cuda.device_count = lambda: int(torch.cuda.is_available())\n'
        'torch.cuda.get_device_capability = lambda i=0: (9, 0)\n')
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    if not env.get('NO_NVCC'):
        (bin_dir / 'nvcc').write_text('#!/bin/sh\nexit 0\n')
        (bin_dir / 'nvcc').chmod(0o755)
    path = os.pathsep.join([str(bin_dir)] + [d for d in os.environ['PATH'].split(os.pathsep)
                                             if not osp.isfile(osp.join(d, 'nvcc'))])
    run_env = {k: v for k, v in os.environ.items()
               if k not in ('FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST', 'CUDA_HOME', 'CUDA_OPS')}
    run_env.update(env, PATH=path, PLAN_ONLY='1', PYTHONPATH=str(site))
    proc = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools', 'build_mmcv.sh'),
                           sys.executable], env=run_env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(plan), (proc.stdout, proc.stderr)


def test_a_failed_environment_step_does_not_stop_the_checks(tmp_path):
    """The environment step only diagnoses: set-up's own status decides whether to go on."""
    fake = tmp_path / 'python'  # its environment report fails; set-up checks and tests pass
    fake.write_text('#!/bin/sh\ncase "$1$2" in\n  -mpytest) exit 0;;\n  -c*) exit 0;;\n'
                    '  -) grep -q importlib.metadata && exit 3; exit 0;;\nesac\nexit 1\n')
    fake.chmod(0o755)
    proc = run_checks(tmp_path, 'cuda_tests', PYTHON=str(fake))
    summary = [line.split()[:2] for line in
               (tmp_path / 'out' / 'summary.txt').read_text().splitlines()]
    assert summary == [['environment', 'FAILED'], ['setup', 'ok'], ['cuda_tests', 'ok']]
    assert proc.returncode == 3


# A miniature of mmcv 2.1's ops source: cudabind.cpp's shape (blocks that declare kernel
# launchers, wrap them and end with REGISTER_DEVICE_IMPL lines, one without its semicolon, as
# two are in mmcv), kernel files, and op files that call CUDA code directly.
CUDABIND = """#include "pytorch_cpp_helper.hpp"
#include "pytorch_device_registry.hpp"

Tensor NMSCUDAKernelLauncher(Tensor boxes, Tensor scores, float iou_threshold, int offset);

Tensor nms_cuda(Tensor boxes, Tensor scores, float iou_threshold, int offset) {
  return NMSCUDAKernelLauncher(boxes, scores, iou_threshold, offset);
}

Tensor nms_impl(Tensor boxes, Tensor scores, float iou_threshold, int offset);
REGISTER_DEVICE_IMPL(nms_impl, CUDA, nms_cuda);

void ROIAlignForwardCUDAKernelLauncher(Tensor input);
void roi_align_forward_cuda(Tensor input) { ROIAlignForwardCUDAKernelLauncher(input); }
void ROIAlignBackwardCUDAKernelLauncher(Tensor grad);
void roi_align_backward_cuda(Tensor grad) { ROIAlignBackwardCUDAKernelLauncher(grad); }
void roi_align_forward_impl(Tensor input);
void roi_align_backward_impl(Tensor grad);

REGISTER_DEVICE_IMPL(roi_align_forward_impl, CUDA, roi_align_forward_cuda);
REGISTER_DEVICE_IMPL(roi_align_backward_impl, CUDA,
                     roi_align_backward_cuda);

void ROIAlignRotatedForwardCUDAKernelLauncher(Tensor input);
void roi_align_rotated_forward_cuda(Tensor input) {
  ROIAlignRotatedForwardCUDAKernelLauncher(input);
}
void roi_align_rotated_forward_impl(Tensor input);
REGISTER_DEVICE_IMPL(roi_align_rotated_forward_impl, CUDA,
                     roi_align_rotated_forward_cuda)

void MSDeformAttnCUDA(Tensor value);
void ms_deform_attn_cuda_forward(Tensor value) { MSDeformAttnCUDA(value); }
void ms_deform_attn_impl_forward(Tensor value);
REGISTER_DEVICE_IMPL(ms_deform_attn_impl_forward, CUDA, ms_deform_attn_cuda_forward);
"""


def mini_mmcv(root):
    csrc = root / 'mmcv' / 'ops' / 'csrc' / 'pytorch'
    (csrc / 'cuda').mkdir(parents=True)
    (csrc / 'cuda' / 'cudabind.cpp').write_text(CUDABIND)
    for op in ('nms', 'roi_align', 'roi_align_rotated', 'ms_deform_attn', 'nms_rotated'):
        (csrc / 'cuda' / f'{op}_cuda.cu').write_text('// kernels\n')
    (csrc / 'nms.cpp').write_text('Tensor nms(Tensor boxes);\n')
    (csrc / 'info.cpp').write_text('#ifdef MMCV_WITH_CUDA\nint cuda_version();\n#endif\n')
    (csrc / 'nms_rotated.cpp').write_text(
        '#ifdef MMCV_WITH_CUDA\nTensor nms_rotated_cuda(Tensor dets);\n#endif\n')
    return csrc


def test_mmcv_cuda_subset_keeps_only_the_named_ops_kernels(tmp_path):
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
    try:
        import mmcv_cuda_subset
    finally:
        sys.path.pop(0)
    preamble, blocks = mmcv_cuda_subset.split_cudabind(CUDABIND)
    assert preamble + ''.join(blocks) == CUDABIND
    assert [mmcv_cuda_subset.registered_keys(b) for b in blocks] == [
        ['nms_impl'], ['roi_align_forward_impl', 'roi_align_backward_impl'],
        ['roi_align_rotated_forward_impl'], ['ms_deform_attn_impl_forward']]

    csrc = mini_mmcv(tmp_path)
    proc = subprocess.run([sys.executable, osp.join(REPO_ROOT, 'tools', 'mmcv_cuda_subset.py'),
                           str(tmp_path), 'nms', 'roi_align'], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(csrc / 'cuda')) == ['cudabind.cpp', 'nms_cuda.cu',
                                                 'roi_align_cuda.cu']
    bind = (csrc / 'cuda' / 'cudabind.cpp').read_text()
    assert bind == CUDABIND[:CUDABIND.index('\nvoid ROIAlignRotated')]
    # A file that calls a deleted kernel directly compiles as CPU-only; the others are kept.
    assert (csrc / 'nms_rotated.cpp').read_text().startswith('#undef MMCV_WITH_CUDA')
    assert (csrc / 'info.cpp').read_text().startswith('#ifdef MMCV_WITH_CUDA')
    assert (csrc / 'nms.cpp').read_text() == 'Tensor nms(Tensor boxes);\n'
    assert 'registered for CUDA: nms_impl, roi_align_forward_impl, roi_align_backward_impl' \
        in proc.stdout


@pytest.mark.parametrize('ops, error', [
    (['nms', 'carafe'], 'no CUDA kernel file'),
    (['nms_rotated'], 'registers no CUDA implementation of'),
])
def test_mmcv_cuda_subset_refuses_ops_it_cannot_keep(tmp_path, ops, error):
    csrc = mini_mmcv(tmp_path)
    proc = subprocess.run([sys.executable, osp.join(REPO_ROOT, 'tools', 'mmcv_cuda_subset.py'),
                           str(tmp_path), *ops], capture_output=True, text=True)
    assert proc.returncode == 1 and error in proc.stderr, proc.stderr
    assert (csrc / 'cuda' / 'cudabind.cpp').read_text() == CUDABIND  # nothing changed
    assert len(os.listdir(csrc / 'cuda')) == 6


def test_build_mmcv_asks_for_setuptools_with_pkg_resources(tmp_path):
    """mmcv 2.1's setup.py imports pkg_resources, which setuptools 82 and newer lack: one line
    that says what to install, before anything is downloaded or compiled."""
    site = tmp_path / 'site'
    site.mkdir()
    (site / 'sitecustomize.py').write_text(
        'import sys\n'
        'class NoPkgResources:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        "        if name == 'pkg_resources':\n"
        "            raise ImportError('setuptools 82 has no pkg_resources')\n"
        'sys.meta_path.insert(0, NoPkgResources())\n')
    env = {k: v for k, v in os.environ.items()
           if k not in ('FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST', 'CUDA_OPS')}
    env.update(PYTHONPATH=str(site), CUDA_VISIBLE_DEVICES='')
    proc = subprocess.run(['bash', osp.join(REPO_ROOT, 'tools', 'build_mmcv.sh'),
                           sys.executable], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "has no pkg_resources, which mmcv 2.1's setup.py imports: " in proc.stderr, \
        proc.stderr
    assert "-m pip install 'setuptools<80' wheel ninja" in proc.stderr
