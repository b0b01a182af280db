"""The benchmark scripts in tools/benchmark keep working (tiny sizes, one repeat, CPU).

These check that each script runs end to end, writes its JSON, and that its correctness guards
hold; the timings of --small runs mean nothing. The whole file takes about 30-50 s on two
CPU cores (the training and inference tests each build R-50 detectors); if that grows, mark
those two ``slow``.
"""
import importlib.util
import json
import os.path as osp
import sys

import numpy as np
import pytest
import torch

from ms_rcnn.models.mask_scoring_roi_head import cpu_has_native
from ms_rcnn.testing import REPO_ROOT

BENCH_DIR = osp.join(REPO_ROOT, 'tools', 'benchmark')


def load(name):
    if BENCH_DIR not in sys.path:
        sys.path.insert(0, BENCH_DIR)
    spec = importlib.util.spec_from_file_location(f'bench_{name}_under_test',
                                                  osp.join(BENCH_DIR, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def smoke_args(tmp_path, *extra):
    out = tmp_path / 'out.json'
    return ['--device', 'cpu', '--threads', '1', '--small', '--repeats', '1', '--warmup', '0',
            '--json', str(out), *extra], out


def check_header(header, sizes_key):
    assert header['device'] == 'cpu'
    assert header['torch_threads'] == 1
    assert {'torch', 'mmcv', 'mmdet', 'mmengine', 'ms_rcnn'} <= set(header['versions'])
    assert sizes_key in header['sizes']


def test_common_helpers():
    common = load('bench_common')
    import numpy as np
    rng = np.random.default_rng(0)
    gt = np.array([[10, 10, 50, 40], [60, 5, 90, 90]], np.float32)
    boxes, inds = common.jittered_boxes(rng, gt, 200, 100, 120)
    g = gt[inds]
    lt, rb = np.maximum(boxes[:, :2], g[:, :2]), np.minimum(boxes[:, 2:], g[:, 2:])
    inter = np.prod((rb - lt).clip(min=0), 1)
    union = np.prod(boxes[:, 2:] - boxes[:, :2], 1) + np.prod(g[:, 2:] - g[:, :2], 1) - inter
    assert (inter / union > 0.5).all()
    assert (boxes[:, 0::2] <= 120).all() and (boxes[:, 1::2] <= 100).all() and (boxes >= 0).all()
    assert common.parse_size('512x672') == (512, 672)

    import torch
    calls = []
    res = common.run_interleaved(
        [common.Side('a', lambda x: calls.append(('a', x)), prepare=lambda i: i),
         common.Side('b', lambda x: calls.append(('b', x)), prepare=lambda i: i)],
        repeats=2, warmup=1, device=torch.device('cpu'), memory=True)
    assert calls == [('a', 0), ('b', 0), ('a', 1), ('b', 1), ('a', 2), ('b', 2)]
    assert len(res['a']['times_s']) == 2 and res['a']['median_s'] >= 0
    assert 'mem_method' in res['a']


@pytest.mark.parametrize('script, extra, says', [
    ('bench_mask_iou_head', ['--warmup', '-1'], 'argument --warmup: must be at least 0, got -1'),
    ('bench_mask_iou_head', ['--rois', '0'], 'argument --rois: must be at least 1, got 0'),
    ('bench_mask_iou_head', ['--repeats', '0'], 'argument --repeats: must be at least 1'),
    ('bench_train_step', ['--size', '0x0'], 'height and width must be at least 1'),
    ('bench_inference', ['--batches', '0'], 'argument --batches: must be at least 1, got 0'),
    ('bench_mask_iou_targets', ['--num-gt', '0'], 'argument --num-gt: must be at least 1'),
])
def test_bad_sizes_and_counts_are_usage_errors(tmp_path, capsys, script, extra, says):
    """They used to fail deep inside numpy, mmengine or statistics after building models."""
    args, _ = smoke_args(tmp_path, *extra)
    with pytest.raises(SystemExit) as stop:
        load(script).main(args)
    assert stop.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize('where, says', [('dir', 'is a directory, not a file'),
                                         ('file/out.json', 'cannot create')])
def test_an_unwritable_json_path_stops_before_timing(tmp_path, where, says):
    (tmp_path / 'dir').mkdir()
    (tmp_path / 'file').write_text('')
    args, _ = smoke_args(tmp_path)
    args[args.index('--json') + 1] = str(tmp_path / where)
    with pytest.raises(SystemExit) as stop:
        load('bench_mask_iou_head').main(args)
    assert str(stop.value.code).startswith('error: --json ') and says in str(stop.value.code)


def test_write_json_is_strict_json(tmp_path):
    common = load('bench_common')
    path = tmp_path / 'out.json'
    common.write_json(str(path), dict(nan=float('nan'), inf=float('inf'),
                                      tensor=torch.tensor([1.0, float('nan')]),
                                      numpy=np.float32(0.5), other=torch.device('cpu')))

    def refuse(token):
        raise ValueError(f'non-strict JSON token {token}')

    assert json.loads(path.read_text(), parse_constant=refuse) == dict(
        nan=None, inf=None, tensor=[1.0, None], numpy=0.5, other='cpu')


def test_heads_build_in_whatever_default_scope_a_caller_left():
    """A Runner leaves mmengine's default scope behind; the heads' MSELoss is mmdet's."""
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmengine'):
        heads = load('bench_mask_iou_targets').Heads()
        theirs, ours = load('bench_mask_iou_head').build_heads(0, torch.device('cpu'), 8, 16)
    assert type(heads.ours.loss_iou).__name__ == type(heads.mmdet.loss_iou).__name__ == 'MSELoss'
    assert torch.equal(theirs.fc_mask_iou.bias, ours.fc_mask_iou.bias)


def test_bench_mask_iou_targets(tmp_path):
    argv, out = smoke_args(tmp_path)
    result = load('bench_mask_iou_targets').main(argv)
    check_header(result['header'], 'gt_per_image')
    assert result['guards_ok']
    assert {(c['mask_type'], c['pos_per_img']) for c in result['cases']} == {
        ('bitmap', 16), ('polygon', 16), ('bitmap', 32), ('polygon', 32)}
    assert len(result['scaling']) == 4
    for case in result['cases'] + result['scaling']:
        assert case['guards']['area_ratio_max_abs_diff'] < 1e-4
        assert case['guards']['target_max_abs_diff_mmdet_at_logit0'] < 1e-4
        assert case['ratio_of_medians'] > 0
    for case in result['cases']:  # counted on CUDA only
        assert case['host_syncs_per_call'] == {
            side: dict(counted=None, waited=None) for side in ('mmdet', 'ours')}
    assert json.loads(out.read_text())['guards_ok']


def test_count_host_syncs():
    common = load('bench_common')
    assert common.count_host_syncs(lambda: torch.ones(3).sum().item(), torch.device('cpu')) \
        is None
    assert common.host_waits(lambda: None, torch.device('cpu')) is None
    if not torch.cuda.is_available():
        pytest.skip('counting needs a CUDA device')
    x = torch.ones(3, device='cuda')
    assert common.count_host_syncs(lambda: x * 2, torch.device('cuda')) == 0
    assert common.count_host_syncs(lambda: (x.sum().item(), x.nonzero()),
                                   torch.device('cuda')) == 2
    assert common.host_waits(lambda: x * 2, torch.device('cuda')) is False
    assert common.host_waits(lambda: (x * 2).sum().item(), torch.device('cuda')) is True


def test_bench_train_step(tmp_path):
    argv, out = smoke_args(tmp_path, '--size', '96x128', '--jittered-proposals', '32')
    result = load('bench_train_step').main(argv)
    check_header(result['header'], 'images')
    assert result['shared_loss_max_abs_diff'] == 0.0
    for side in ('mmdet', 'ours'):
        assert len(result['results'][side]['times_s']) == 1
        assert result['results'][side]['positives_per_step'][0] > 0
    assert json.loads(out.read_text())['ratio_of_medians'] > 0


def test_bench_inference(tmp_path):
    argv, out = smoke_args(tmp_path, '--size', '96x128')
    result = load('bench_inference').main(argv)
    check_header(result['header'], 'batches')
    assert set(result['results']) == {'1', '2'}
    for guards in result['guards'].values():
        assert guards['detections_per_image'] > 0
        assert guards['box_max_abs_diff'] == 0.0
        assert guards['mask_pixel_disagreement'] == 0.0
        assert guards['ours_mask_iou_vs_mmdet_clamped_max_abs_diff'] < 1e-5
        assert 0.0 < guards['ours_bf16_head_mask_iou_vs_ours_max_abs_diff'] < 2e-2
    saved = json.loads(out.read_text())
    assert 'overhead_vs_mask_rcnn_pct' in saved['results']['1']['ours']
    for batch, res in saved['results'].items():
        assert 'mask_iou_head_median_s' not in res['mask_rcnn']
        for name in ('mmdet_ms', 'ours', 'ours_bf16_head'):
            # one head forward per timed call, inside that call's time
            head_times, call_times = res[name]['mask_iou_head_times_s'], res[name]['times_s']
            assert len(head_times) == len(call_times)
            assert all(0.0 < h < c for h, c in zip(head_times, call_times))
    assert 'overhead_vs_mask_rcnn_pct' in saved['results']['1']['ours_bf16_head']
    assert saved['header']['sizes']['native_bf16'] is cpu_has_native(torch.bfloat16)


def test_layer_macs_by_hand():
    import torch
    bench = load('bench_inference')
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.zeros(1, 3, 5, 5)
    assert bench.layer_macs(conv, (x, ), conv(x)) == 4 * 5 * 5 * 3 * 9
    grouped = torch.nn.Conv2d(4, 4, 3, padding=1, groups=2)
    y = torch.zeros(2, 4, 5, 5)
    assert bench.layer_macs(grouped, (y, ), grouped(y)) == 2 * 4 * 5 * 5 * 2 * 9
    deconv = torch.nn.ConvTranspose2d(2, 3, 2, stride=2)
    z = torch.zeros(1, 2, 4, 4)
    assert bench.layer_macs(deconv, (z, ), deconv(z)) == 32 * 3 * 4
    linear = torch.nn.Linear(10, 2)
    w = torch.zeros(3, 10)
    assert bench.layer_macs(linear, (w, ), linear(w)) == 3 * 2 * 10
    assert bench.layer_macs(torch.nn.ReLU(), (w, ), w) == 0


def test_forward_timer_times_only_the_module():
    import time
    common = load('bench_common')

    class Sleepy(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.02)
            return x

    inner = Sleepy()
    outer = torch.nn.Sequential(inner, Sleepy())
    timer = common.ForwardTimer(inner, torch.device('cpu'))
    outer(torch.zeros(1))  # a warm-up call, dropped
    timer.end_call(keep=False)
    outer(torch.zeros(1))
    inner(torch.zeros(1))  # two forwards in one call are added up
    timer.end_call()
    timer.remove()
    outer(torch.zeros(1))
    assert timer.spans == [] and len(timer.per_call_s) == 1
    assert 0.04 <= timer.per_call_s[0] < 0.06


@pytest.mark.parametrize('backward', [False, True])
def test_bench_mask_iou_head(tmp_path, backward):
    argv, out = smoke_args(tmp_path, *(['--backward'] if backward else []))
    result = load('bench_mask_iou_head').main(argv)
    check_header(result['header'], 'rois')
    sides = {'mmdet', 'ours'} | (set() if backward else {'ours_blas_fc', 'ours_bfloat16'})
    assert set(result['results']) == sides
    guards = result['guards']
    assert guards['ours_vs_mmdet_max_abs_diff'] < 1e-5
    if not backward:
        assert guards['ours_blas_fc_vs_mmdet_max_abs_diff'] < 1e-5
        assert 0.0 < guards['ours_bfloat16_vs_ours_max_abs_diff'] < 2e-2
        assert result['ratios']['ours_blas_fc_vs_ours']['ratio_of_medians'] > 0
    assert json.loads(out.read_text())['ratios']['ours']['ratio_of_medians'] > 0
