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

from ms_rcnn.testing import REPO_ROOT

SCRIPT = osp.join(REPO_ROOT, 'tools', 'gpu_checks.sh')


@pytest.mark.parametrize('path', sorted(glob.glob(osp.join(REPO_ROOT, 'tools', '*.sh'))),
                         ids=osp.basename)
def test_shell_scripts_parse(path):
    proc = subprocess.run(['bash', '-n', path], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def run_checks(tmp_path, *steps):
    env = dict(os.environ, OUT=str(tmp_path / 'out'), DEVICE='cpu', PYTHON=sys.executable,
               SITE=str(tmp_path / 'site'), WHEELS=str(tmp_path / 'no_wheels'),
               OMP_NUM_THREADS='1')
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
        ['setup', 'ok'], ['environment', 'ok'], ['cuda_tests', 'ok']]
    log = (tmp_path / 'out' / 'log.txt').read_text()
    assert 'nothing to install' in log and 'ops run on cpu' in log
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
