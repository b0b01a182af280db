"""Benchmark the MaskIoU head alone: mmdet's MaskIoUHead vs ours, at fp32 and reduced precision.

Both heads hold the same weights (mmdet's initialised with a fixed seed and loaded into ours)
and get the same inputs: RoI features (N, 256, 14, 14) and mask logits (N, 28, 28) of each
RoI's class, N = ``--rois`` (100: a busy COCO image at test time). Sides:

- ``mmdet``: mmdet's head (NCHW convs, ``nn.Linear``);
- ``ours``: our head (channels-last convs on the CPU; at fp32 CPU inference the FC layers run
  on oneDNN's matmul, see ``ms_rcnn.models.onednn_linear``);
- ``ours_blas_fc`` (CPU, inference only): ours with the FC layers on torch's default
  ``F.linear`` (the BLAS sgemm), which isolates what oneDNN's matmul brings;
- ``ours_<dtype>`` (unless ``--no-low-precision``): ours under autocast to bfloat16 (CPU, or a
  GPU that supports it) or float16, what ``test_cfg.rcnn.mask_iou_dtype`` does in the model.

Inference (default) times ``head(feats, masks)`` under ``torch.no_grad()`` with the heads in
eval mode; ``--backward`` times forward + backward of the sum of the outputs instead (the
training path; no reduced-precision or BLAS sides). Guards: every fp32 side's outputs against
mmdet's (max |diff|), the reduced-precision side against ours.

    python tools/benchmark/bench_mask_iou_head.py --device cpu --repeats 15
    python tools/benchmark/bench_mask_iou_head.py --device cpu --backward --repeats 7
"""
import argparse
import contextlib
import os.path as osp
import sys
from typing import Any, Dict, List, Optional
from unittest import mock

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402

import bench_common as common  # noqa: E402


def build_heads(seed: int, device: torch.device, channels: int, fc_width: int):
    """mmdet's and our MaskIoU heads with the same weights, in eval mode."""
    from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead

    from ms_rcnn.models import MaskIoUHead
    kwargs = dict(num_classes=80, in_channels=channels, conv_out_channels=channels,
                  fc_out_channels=fc_width)
    torch.manual_seed(seed)
    with common.mmdet_scope():  # both build mmdet's MSELoss
        theirs = MMDetMaskIoUHead(**kwargs)
        theirs.init_weights()
        with torch.no_grad():  # outputs in (0, 1), like a trained head's
            theirs.fc_mask_iou.bias.fill_(0.7)
        ours = MaskIoUHead(**kwargs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return theirs.to(device).eval(), ours.to(device).eval()


def low_precision_dtype(device: torch.device) -> torch.dtype:
    if device.type == 'cuda' and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def blas_fc():
    """Context in which our FC layers use ``F.linear`` (torch's default) instead of oneDNN."""
    return mock.patch('ms_rcnn.models.onednn_linear.use_onednn_linear', return_value=False)


def make_call(head: torch.nn.Module, feats: torch.Tensor, masks: torch.Tensor, backward: bool,
              context=contextlib.nullcontext):
    def call(_):
        with context():
            if not backward:
                with torch.no_grad():
                    return head(feats, masks)
            out = head(feats, masks)
            out.float().sum().backward()
            return out.detach()
    return call


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, default_threads=None, default_repeats=15)
    parser.add_argument('--rois', type=common.positive_int, default=100,
                        help='RoIs per call (default: 100)')
    parser.add_argument('--backward', action='store_true',
                        help='time forward + backward (training) instead of inference')
    parser.add_argument('--no-low-precision', dest='low_precision', action='store_false',
                        help='leave out ours under bfloat16/float16 autocast')
    args = parser.parse_args(argv)
    device = common.setup(args)
    common.quiet_mmengine()
    channels, fc_width = (16, 64) if args.small else (256, 1024)
    if args.small:
        args.rois = min(args.rois, 8)

    low = low_precision_dtype(device)
    sizes = dict(rois=args.rois, features=f'({args.rois}, {channels}, 14, 14)',
                 masks=f'({args.rois}, 28, 28)', fc=f'{channels * 49} -> {fc_width} -> '
                 f'{fc_width} -> 80', mode='forward + backward' if args.backward
                 else 'inference (no_grad, eval)')
    header = common.make_header('MaskIoU head alone: mmdet vs ours', args, device, sizes)
    theirs, ours = build_heads(args.seed, device, channels, fc_width)
    gen = torch.Generator().manual_seed(args.seed)
    feats = torch.relu(torch.randn(args.rois, channels, 14, 14, generator=gen)).to(device)
    masks = torch.randn(args.rois, 28, 28, generator=gen).mul(3).to(device)
    if args.backward:
        feats.requires_grad_(True)

    sides = [common.Side('mmdet', make_call(theirs, feats, masks, args.backward)),
             common.Side('ours', make_call(ours, feats, masks, args.backward))]
    if device.type == 'cpu' and not args.backward:
        sides.append(common.Side('ours_blas_fc',
                                 make_call(ours, feats, masks, False, context=blas_fc)))
    low_name = f'ours_{str(low).split(".")[-1]}'
    if args.low_precision and not args.backward:
        sides.append(common.Side(low_name, make_call(
            ours, feats, masks, False,
            context=lambda: torch.autocast(device.type, dtype=low))))

    outputs: Dict[str, torch.Tensor] = {}

    def on_result(name, rnd, out):
        if name not in outputs:  # the first output of each side, for the guards
            outputs[name] = out.detach().float().cpu()
        if args.backward:  # gradients accumulate otherwise; they are not compared
            for head in (theirs, ours):
                head.zero_grad(set_to_none=True)
            feats.grad = None

    res = common.run_interleaved(sides, args.repeats, args.warmup, device, on_result=on_result)
    guards = {f'{name}_vs_mmdet_max_abs_diff': (outputs[name] - outputs['mmdet']).abs().max().item()
              for name in outputs if name in ('ours', 'ours_blas_fc')}
    if low_name in outputs:
        guards[f'{low_name}_vs_ours_max_abs_diff'] = (
            outputs[low_name] - outputs['ours']).abs().max().item()
    ratios = {name: common.ratio(res, 'mmdet', name) for name in res if name != 'mmdet'}
    if 'ours_blas_fc' in res:
        ratios['ours_blas_fc_vs_ours'] = common.ratio(res, 'ours_blas_fc', 'ours')

    rows = [[name, common.ms(r['median_s']), common.ms(r['min_s']),
             f'{ratios[name]["ratio_of_medians"]:.2f}x' if name in ratios else '-',
             f'{ratios[name]["median_paired_ratio"]:.2f}x' if name in ratios else '-']
            for name, r in res.items()]
    print(f'MaskIoU head, {args.rois} RoIs, {sizes["mode"]}, median of {args.repeats}:')
    common.print_table(['side', 'median ms', 'min ms', 'mmdet / side', 'paired'], rows)
    if 'ours_blas_fc_vs_ours' in ratios:
        rat = ratios['ours_blas_fc_vs_ours']
        print(f'FC layers on oneDNN vs BLAS: ours_blas_fc / ours = {rat["ratio_of_medians"]:.3f}x'
              f' (paired {rat["median_paired_ratio"]:.3f}x)')
    print('guards: ' + ', '.join(f'{k} {v:.1e}' for k, v in guards.items()))
    payload = dict(header=header, results=res, ratios=ratios, guards=guards)
    common.write_json(args.json, payload)
    return payload


if __name__ == '__main__':
    main()
