"""The MaskIoU head never waits for the accelerator.

Its targets (bitmap and polygon ground truth), loss, backward pass and scoring must run without
a device-to-host copy, which would stall the GPU until all queued work is done.

On the CPU this is checked on PyTorch's ``meta`` device: its tensors have shapes but no data,
so every operation that has to read a value on the host (``item``, ``bool``, ``tolist``,
``nonzero``, boolean indexing, ``unique``, ``repeat_interleave`` without a size, a copy to the
CPU) raises there. Those are the operations that synchronise with a GPU. Host data entering
device tensors in a blocking way is caught by ``ms_rcnn.testing.NoBlockingHostTransfers``.
On CUDA the same calls run under ``torch.cuda.set_sync_debug_mode('error')``, and, to catch
what that mode cannot see, with the device kept busy by queued work that the host must not
wait for (``ms_rcnn.testing.host_waits_for_device``).
"""
import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from ms_rcnn.models import MaskIoUHead
from ms_rcnn.models.mask_iou_math import batch_area_ratios, bitmap_area_ratios
from ms_rcnn.testing import (HostTransferError, NoBlockingHostTransfers, host_waits_for_device,
                             sync_verdict)

CFG = ConfigDict(mask_thr_binary=0.5)
HEIGHT, WIDTH = 48, 64


def ground_truth(mask_type: str, num_images: int = 2) -> list:
    """Three square instances per image, as bitmaps or polygons (host memory, as in training)."""
    squares = [(4, 4, 20, 20), (24, 8, 60, 40), (10, 30, 30, 46)]  # x1, y1, x2, y2
    polygons = [[np.array([x1, y1, x2, y1, x2, y2, x1, y2], np.float64)]
                for x1, y1, x2, y2 in squares]
    gts = []
    for _ in range(num_images):
        masks = PolygonMasks(polygons, HEIGHT, WIDTH)
        if mask_type == 'bitmap':
            masks = BitmapMasks(masks.to_bitmap().masks.astype(np.uint8), HEIGHT, WIDTH)
        gts.append(InstanceData(masks=masks))
    return gts


def sampling_results(device, num_images: int = 2) -> list:
    boxes = torch.tensor([[3., 3., 19., 21.], [20., 6., 62., 44.], [0., 0., 64., 48.],
                          [12., 28., 28., 44.]], device=device)
    inds = torch.tensor([0, 1, 1, 2], device=device)
    return [SimpleNamespace(pos_priors=boxes, pos_assigned_gt_inds=inds)
            for _ in range(num_images)]


def small_head(device) -> MaskIoUHead:
    return MaskIoUHead(num_classes=3, in_channels=8, conv_out_channels=8,
                       fc_out_channels=16).to(device)


def make_inputs(device, mask_type: str) -> dict:
    """Everything one training step and one scoring call need, already on ``device``."""
    torch.manual_seed(0)
    results = sampling_results(device)
    num_pos = sum(len(r.pos_priors) for r in results)
    return dict(
        head=small_head(device), gts=ground_truth(mask_type), results=results,
        feats=torch.randn(num_pos, 8, 14, 14, device=device),
        mask_preds=torch.randn(num_pos, 28, 28, device=device, requires_grad=True),
        mask_targets=(torch.rand(num_pos, 28, 28, device=device) > 0.5).float(),
        labels=torch.tensor([0, 1, 1, 2] * 2, device=device),
        pos_index=torch.arange(num_pos, device=device),
        detections=InstanceData(scores=torch.rand(5, device=device),
                                labels=torch.tensor([0, 2, 1, 1, 0], device=device)))


def training_and_scoring(inputs: dict) -> dict:
    """One MaskIoU training step (forward, targets, loss, backward) and one scoring call."""
    head, results, gts = inputs['head'], inputs['results'], inputs['gts']
    mask_preds = inputs['mask_preds']
    iou_preds = head(inputs['feats'], mask_preds)
    pos_iou = iou_preds[inputs['pos_index'], inputs['labels']]
    loss = head.loss_and_target(pos_iou, mask_preds, inputs['mask_targets'], results, gts,
                                CFG)['loss_mask_iou']
    loss.backward()
    scored = head.predict_by_feat([head(inputs['feats'][:5], mask_preds[:5].detach())],
                                  [inputs['detections'].clone()])[0]
    return dict(loss=loss, grad=mask_preds.grad, scores=scored.scores,
                ratios=batch_area_ratios([gt.masks for gt in gts],
                                         [r.pos_priors for r in results],
                                         [r.pos_assigned_gt_inds for r in results]))


@pytest.mark.parametrize('mask_type', ['bitmap', 'polygon'])
def test_no_host_read_or_blocking_copy_on_meta_device(mask_type):
    inputs = make_inputs(torch.device('meta'), mask_type)
    with NoBlockingHostTransfers():
        out = training_and_scoring(inputs)
    assert out['loss'].device.type == 'meta' and out['loss'].shape == ()
    assert out['grad'].shape == (8, 28, 28)
    assert out['scores'].shape == (5, )
    assert out['ratios'].shape == (8, )


def test_meta_device_catches_host_reads():
    """The check has teeth: mmdet's get_targets copies boxes to the host and fails there."""
    results, gts = sampling_results('meta'), ground_truth('bitmap')
    masks = torch.zeros(8, 28, 28, device='meta')
    with pytest.raises((NotImplementedError, RuntimeError), match='meta'):
        MMDetMaskIoUHead(num_classes=3).get_targets(results, gts, masks, masks, CFG)


def test_bitmap_tables_in_several_passes_on_meta_device():
    masks = torch.zeros(5, 30, 40, dtype=torch.uint8, device='meta')
    boxes = torch.rand(12, 4, device='meta')
    gt_inds = torch.zeros(12, dtype=torch.long, device='meta')
    with NoBlockingHostTransfers():
        ratios = bitmap_area_ratios(masks, boxes, gt_inds, max_table_entries=2 * 31 * 41)
    assert ratios.shape == (12, ) and ratios.device.type == 'meta'


@pytest.mark.parametrize('transfer', [
    lambda x: torch.tensor([[1, 2]], device='meta'),
    lambda x: torch.as_tensor(np.ones(3), device='meta'),
    lambda x: torch.ones(3).to('meta'),
    lambda x: torch.ones(3).to(x),
    lambda x: x.copy_(torch.ones(3)),
    lambda x: x[torch.tensor([0, 2])],
    lambda x: torch.where(x > 0, x, torch.zeros(3)),
], ids=['tensor', 'as_tensor', 'to', 'to_like', 'copy_', 'cpu_index', 'mixed_op'])
def test_blocking_host_transfers_are_caught(transfer):
    x = torch.ones(3, device='meta')
    with NoBlockingHostTransfers(), pytest.raises(HostTransferError):
        transfer(x)


def test_non_blocking_and_scalar_transfers_pass():
    x = torch.ones(3, device='meta')
    with NoBlockingHostTransfers():
        assert torch.ones(3).to('meta', non_blocking=True).device.type == 'meta'
        assert (x * torch.tensor(2.0)).device.type == 'meta'  # 0-dim: passed by value
        assert torch.full((2, ), 3, device='meta').shape == (2, )


@pytest.mark.parametrize('pending, slept_s, alone_s, expected', [
    (True, 0.2, 0.01, False),   # the sleep outlasted the call: it did not wait
    (True, 0.001, 0.01, False),  # still pending, however short: it cannot have waited
    (False, 0.2, 0.01, True),   # a sleep 20x the call had ended: only a wait explains that
    (False, 0.03, 0.01, True),  # 3x is enough
    (False, 0.02, 0.01, None),  # too short to tell: retried longer
    (False, 0.001, 0.01, None),  # GPU clocks ran fast: too short to tell
])
def test_sync_verdict(pending, slept_s, alone_s, expected):
    assert sync_verdict(pending, slept_s, alone_s) is expected


def test_host_waits_for_device_needs_cuda():
    with pytest.raises(ValueError, match='needs a CUDA device'):
        host_waits_for_device(lambda: None, torch.device('cpu'))


def cuda_or_skip() -> torch.device:
    if not torch.cuda.is_available():
        pytest.skip('needs a CUDA device')
    return torch.device('cuda')


@pytest.mark.parametrize('mask_type', ['bitmap', 'polygon'])
def test_no_sync_on_cuda(mask_type):
    device = cuda_or_skip()
    training_and_scoring(make_inputs(device, mask_type))  # warm-up: lazy CUDA/cuBLAS set-up
    inputs = make_inputs(device, mask_type)
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode('error')
    try:
        out = training_and_scoring(inputs)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    cpu = training_and_scoring(make_inputs(torch.device('cpu'), mask_type))
    assert torch.allclose(out['ratios'].cpu(), cpu['ratios'], atol=1e-6)
    assert torch.isfinite(out['loss']).item()


@pytest.mark.parametrize('mask_type', ['bitmap', 'polygon'])
def test_host_does_not_wait_for_queued_cuda_work(mask_type):
    """Catches every kind of wait, also those the sync debug mode cannot see (copies from
    pageable memory, event waits)."""
    device = cuda_or_skip()
    training_and_scoring(make_inputs(device, mask_type))  # warm-up
    batches = [make_inputs(device, mask_type) for _ in range(2)]
    # host_waits_for_device calls it once alone, then once per try: cycle the two batches.
    cycle = itertools.cycle(batches)
    assert not host_waits_for_device(lambda: training_and_scoring(next(cycle)), device)


def test_host_waits_for_device_sees_a_sync():
    """The positive control: a call that reads a device value waits for the queued sleep."""
    device = cuda_or_skip()
    x = torch.ones(1000, device=device)
    assert host_waits_for_device(lambda: (x * 2).sum().item(), device)
    assert not host_waits_for_device(lambda: x * 2, device)



def test_host_waits_for_device_retries_a_sleep_too_short_to_tell(monkeypatch):
    """The control flow, with CUDA's sleep and events faked: a try whose sleep had ended
    without being 3x the call is retried with a sleep twice as long; fn runs once per try."""
    import contextlib
    import time
    slept_ms = iter([50.0, 1.0, 400.0])  # calibration, try 1 (too short), try 2
    pending = iter([False, True])  # try 1: the sleep had ended; try 2: still running

    class FakeEvent:
        def __init__(self, enable_timing=False):
            pass

        def record(self):
            pass

        def synchronize(self):
            pass

        def query(self):
            return not next(pending)

        def elapsed_time(self, other):
            return next(slept_ms)

    sleeps, calls = [], []
    monkeypatch.setattr(torch.cuda, 'device', lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, 'synchronize', lambda *args: None)
    monkeypatch.setattr(torch.cuda, '_sleep', sleeps.append)
    monkeypatch.setattr(torch.cuda, 'Event', FakeEvent)
    def call():  # 10 ms alone: try 1's 1-ms sleep is too short to tell
        calls.append(1)
        time.sleep(0.01)

    assert host_waits_for_device(call, torch.device('cuda'), min_sleep_s=0.2) is False
    assert len(calls) == 3  # alone, try 1, try 2
    # clock ramp, calibration (10M cycles in 50 ms: 2e8 cycles/s), 0.2 s, then 0.4 s
    assert sleeps == [100_000_000, 10_000_000, 40_000_000, 80_000_000]
