"""Benchmark one training iteration: ms_rcnn's MS R-CNN vs mmdet's MS R-CNN, R-50-FPN.

One iteration is what mmengine's runner does per batch: ``model.train_step(data,
optim_wrapper)`` = data preprocessor + forward with losses + backward + SGD step (momentum 0.9,
weight decay 1e-4, as the configs). Both detectors have identical weights (mmdet's is
initialised with a fixed seed, its state dict is loaded into ours with strict=True), identical
inputs (synthetic images with 3-5 star-shaped GT instances each, polygon masks by default) and
the same RNG seed before each side's i-th step, so RPN and R-CNN sample the same proposals.

With random weights the RPN's proposals almost never overlap the GT, so the only positives
would be the GT boxes themselves (add_gt_as_proposals): a handful per image, where a trained
detector has up to 128 (512 sampled RoIs x 0.25). Each image's RPN proposals are therefore
extended by ``--jittered-proposals`` fixed copies of its GT boxes with Gaussian jitter (IoU >
0.5 with their GT), the same on both sides; the sampler, heads, losses and backward are
untouched. ``--jittered-proposals 0`` switches this off.

The learning rate defaults to 0: SGD then does exactly the same arithmetic, but the weights do
not move, so every repeat times the same computation (a randomly initialised detector can
diverge at lr 0.02 within a few steps). ``--lr 0.02`` lets the weights move.

Peak memory: CUDA ``max_memory_allocated`` (reset before each step); CPU the peak RSS increase
during the step (see bench_common.PeakMemory). ``get_targets`` of the MaskIoU head is also timed
inside the step (on CUDA only with ``--breakdown``, which adds two synchronisations per step).

    python tools/benchmark/bench_train_step.py                      # CUDA if available
    python tools/benchmark/bench_train_step.py --device cpu --size 512x672 --repeats 5
"""
import argparse
import copy
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_common as common  # noqa: E402

MMDET_CONFIG = 'ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py'
OURS_CONFIG = 'ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py'


def build_pair(seed: int, device: torch.device):
    """mmdet's and our detector with identical weights."""
    theirs_cfg = common.model_config(common.mmdet_config_path(MMDET_CONFIG))
    ours_cfg = common.model_config(common.ours_config_path(OURS_CONFIG))
    torch.manual_seed(seed)
    theirs = common.build_model(theirs_cfg, device)
    theirs.init_weights()
    ours = common.build_model(ours_cfg, device)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert type(theirs).__module__.startswith('mmdet.'), type(theirs)
    assert type(ours).__module__.startswith('ms_rcnn.'), type(ours)
    return theirs, ours


class ProposalInjector:
    """Appends fixed extra proposals to the RPN's proposals of each image during training
    (wraps the RPN head's ``loss_and_predict``, instance attribute)."""

    def __init__(self, rpn_head, extra: List[torch.Tensor]):
        from mmengine.structures import InstanceData
        inner = rpn_head.loss_and_predict

        def wrapped(*args, **kwargs):
            losses, results_list = inner(*args, **kwargs)
            if not extra:
                return losses, results_list
            out = []
            for res, boxes in zip(results_list, extra):
                if set(res.keys()) != {'bboxes', 'scores', 'labels'}:
                    raise RuntimeError(f'unexpected RPN result fields {sorted(res.keys())}')
                boxes = boxes.to(res.bboxes)
                more = InstanceData(bboxes=boxes, scores=res.scores.new_ones(len(boxes)),
                                    labels=res.labels.new_zeros(len(boxes)))
                out.append(InstanceData.cat([res, more]))
            return losses, out

        rpn_head.loss_and_predict = wrapped


class TargetTimer:
    """Wraps a MaskIoU head's ``get_targets`` (instance attribute, so the head's own
    ``loss_and_target`` calls it) and records its time and the number of positives."""

    def __init__(self, head, device: torch.device, enabled: bool):
        self.times, self.num_pos = [], []
        self.device = device
        if enabled:
            inner = head.get_targets

            def timed(*args, **kwargs):
                common.sync(device)
                start = time.perf_counter()
                out = inner(*args, **kwargs)
                common.sync(device)
                self.times.append(time.perf_counter() - start)
                self.num_pos.append(int(out.numel()))
                return out

            head.get_targets = timed


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, default_threads=None, default_repeats=5)
    parser.add_argument('--size', type=common.parse_size, default=None,
                        help='image HxW (default: 512x672 on CPU, 800x1216 on CUDA)')
    parser.add_argument('--batch', type=common.positive_int, default=2, help='images per step')
    parser.add_argument('--mask-type', choices=['polygon', 'bitmap'], default='polygon',
                        help='GT mask type (mmdet\'s COCO pipeline, poly2mask=True, gives '
                             'bitmaps)')
    parser.add_argument('--jittered-proposals', type=common.non_negative_int, default=256,
                        help='extra proposals per image jittered around the GT (see above)')
    parser.add_argument('--lr', type=float, default=0.0, help='SGD learning rate (see above)')
    parser.add_argument('--breakdown', action='store_true',
                        help='time get_targets inside the step on CUDA (always on for CPU)')
    args = parser.parse_args(argv)
    device = common.setup(args)
    common.quiet_mmengine()
    args.size = common.default_size(args, device)
    height, width = args.size
    num_classes = 80
    breakdown = device.type == 'cpu' or args.breakdown

    sizes = dict(model='R-50-FPN MS R-CNN (mmdet config ' + MMDET_CONFIG + ' vs ours configs/'
                 + OURS_CONFIG + '), backbone.init_cfg=None', num_classes=num_classes,
                 images=f'{args.batch} of {height}x{width}', gt_per_image='3-5 star polygons',
                 gt_masks=args.mask_type,
                 proposals=f'RPN output + {args.jittered_proposals} jittered GT boxes per image',
                 optimizer=f'SGD lr={args.lr} momentum=0.9 weight_decay=1e-4',
                 step='model.train_step: preprocess + forward + backward + SGD step')
    header = common.make_header('Training step: mmdet MS R-CNN vs ours', args, device, sizes)

    from mmengine.optim import OptimWrapper
    theirs, ours = build_pair(args.seed, device)
    models = dict(mmdet=theirs, ours=ours)

    rng = np.random.default_rng(args.seed)
    data = common.detection_batch(rng, args.batch, height, width, num_classes,
                                  mask_type=args.mask_type)
    extra = []
    if args.jittered_proposals > 0:
        for sample in data['data_samples']:
            boxes, _ = common.jittered_boxes(rng, sample.gt_instances.bboxes.numpy(),
                                             args.jittered_proposals, height, width)
            extra.append(torch.from_numpy(boxes))
    wrappers, timers = {}, {}
    for name, model in models.items():
        model.train()
        wrappers[name] = OptimWrapper(torch.optim.SGD(
            model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4))
        timers[name] = TargetTimer(model.roi_head.mask_iou_head, device, breakdown)
        ProposalInjector(model.rpn_head, extra)

    def prepare(step: int):
        torch.manual_seed(args.seed + step)  # same proposals sampled on both sides
        np.random.seed(args.seed + step)
        return copy.deepcopy(data)  # the preprocessor edits data samples in place

    first_losses: Dict[str, Dict[str, float]] = {}

    def on_result(name, rnd, log_vars):
        if name not in first_losses:
            first_losses[name] = {k: float(v.detach()) for k, v in log_vars.items()}

    sides = [common.Side(name, (lambda d, n=name: models[n].train_step(d, wrappers[n])),
                         prepare) for name in models]
    res = common.run_interleaved(sides, args.repeats, args.warmup, device, memory=True,
                                 on_result=on_result)
    for name in models:
        t = timers[name]
        if t.times:  # drop warm-up calls: keep the last `repeats`
            res[name]['get_targets_s'] = t.times[-args.repeats:]
            res[name]['get_targets_median_s'] = float(np.median(t.times[-args.repeats:]))
            res[name]['positives_per_step'] = t.num_pos[-args.repeats:]
    rat = common.ratio(res, 'mmdet', 'ours')

    rows = []
    for name in models:
        r = res[name]
        rows.append([name, common.ms(r['median_s']), common.ms(r['min_s']),
                     common.mib(r.get('mem_median_bytes')), common.mib(r.get('mem_max_bytes')),
                     common.ms(r['get_targets_median_s']) if 'get_targets_median_s' in r
                     else '-',
                     (f'{np.mean(r["positives_per_step"]):.0f}'
                      if 'positives_per_step' in r else '-')])
    mem_label = 'peak MiB' if device.type == 'cuda' else 'peak RSS+ MiB'
    print(f'Training step, median of {args.repeats} (ms):')
    common.print_table(['side', 'median ms', 'min ms', f'{mem_label} (med)', '(max)',
                        'get_targets ms', 'positives/step'], rows)
    print(f'mmdet / ours: {rat["ratio_of_medians"]:.3f}x (ratio of medians), '
          f'{rat["median_paired_ratio"]:.3f}x (median of paired ratios)')
    print(f'memory: {res["ours"].get("mem_method", "not measured")}')
    if 'get_targets_median_s' in res['ours']:
        theirs_t = res['mmdet']['get_targets_median_s']
        ours_t = res['ours']['get_targets_median_s']
        print(f'get_targets inside the step: mmdet {common.ms(theirs_t)} ms, ours '
              f'{common.ms(ours_t)} ms; the difference is '
              f'{100 * (theirs_t - ours_t) / res["mmdet"]["median_s"]:.1f}% of mmdet\'s step')
    print()

    # Guard: same weights, inputs and seeds give the same losses, except loss_mask_iou, whose
    # targets binarise at a different threshold by design.
    rows, worst = [], 0.0
    for key in first_losses['mmdet']:
        a, b = first_losses['mmdet'][key], first_losses['ours'].get(key, float('nan'))
        diff = abs(a - b)
        if key not in ('loss', 'loss_mask_iou'):
            worst = max(worst, diff)
        rows.append([key, f'{a:.6f}', f'{b:.6f}', f'{diff:.2e}'])
    print('First step losses (same weights, inputs and seeds; loss_mask_iou differs by design):')
    common.print_table(['loss', 'mmdet', 'ours', '|diff|'], rows)
    print(f'Shared losses max |diff|: {worst:.2e}')

    payload = dict(header=header, results=res, **rat, first_step_losses=first_losses,
                   shared_loss_max_abs_diff=worst)
    common.write_json(args.json, payload)
    return payload


if __name__ == '__main__':
    main()
