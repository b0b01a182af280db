"""Benchmark inference: mmdet's Mask R-CNN vs mmdet's MS R-CNN vs ms_rcnn's MS R-CNN, R-50-FPN.

All three share the same weights: mmdet's Mask R-CNN is initialised with a fixed seed and its
state dict is loaded into both MS R-CNN models (strict=False; only the MaskIoU head is
missing); the MaskIoU head is initialised once from a second fixed seed and copied into both.
What differs is the scoring head (and, between the MS models, its implementation), so the
overhead of scoring masks is measured against the same Mask R-CNN. A fourth model,
``ours_bf16_head``, is ours with ``test_cfg.rcnn.mask_iou_dtype='bfloat16'`` (the MaskIoU head
under bfloat16 autocast, everything else fp32; ``--no-bf16-head`` leaves it out).

A randomly initialised classifier scores every class at about 1/81, below the test
``score_thr`` of 0.05, so nothing would be detected and the mask branch would never run.
The shared classifier's bias is therefore raised for a few classes (``--hot-classes``, by
``--hot-bias``) so that every image yields about ``max_per_img`` (100) detections, the busy
case of a COCO image; the MaskIoU head's output bias is set to 0.7 so predicted IoUs are
plausible (in (0, 1)). test_cfg is that of the configs (score_thr 0.05, NMS 0.5, 100 per
image, masks pasted at the original image size).

One call is ``model.test_step(data)`` (data preprocessor + predict with rescale=True) under
``model.eval()`` and ``torch.no_grad()``, for batch 1 and batch 4. Latency per image is the
median call time / batch; throughput is batch / median call time. Inside the same timed calls,
hooks time the MaskIoU head's own forward (host clock on the CPU, CUDA events on a GPU: no
extra syncs), which shows how much of the overhead over Mask R-CNN is the head itself.

    python tools/benchmark/bench_inference.py                       # CUDA if available
    python tools/benchmark/bench_inference.py --device cpu --size 512x672 --repeats 5
"""
import argparse
import copy
import os.path as osp
import statistics
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_common as common  # noqa: E402

MASK_RCNN_CONFIG = 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
MMDET_MS_CONFIG = 'ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py'
OURS_CONFIG = 'ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py'
IOU_HEAD = 'roi_head.mask_iou_head.'


def build_models(seed: int, device: torch.device, hot_classes: int, hot_bias: float,
                 bf16_head: bool = True):
    """Mask R-CNN, mmdet's MS R-CNN and ours, with shared weights (see the module doc)."""
    torch.manual_seed(seed)
    mask_rcnn = common.build_model(
        common.model_config(common.mmdet_config_path(MASK_RCNN_CONFIG)), device)
    mask_rcnn.init_weights()
    with torch.no_grad():
        mask_rcnn.roi_head.bbox_head.fc_cls.bias[:hot_classes] += hot_bias
    shared = mask_rcnn.state_dict()

    mmdet_ms = common.build_model(
        common.model_config(common.mmdet_config_path(MMDET_MS_CONFIG)), device)
    ours = common.build_model(common.model_config(common.ours_config_path(OURS_CONFIG)), device)
    for model in (mmdet_ms, ours):
        missing, unexpected = model.load_state_dict(shared, strict=False)
        if unexpected or not missing or any(not k.startswith(IOU_HEAD) for k in missing):
            raise RuntimeError(f'unexpected weight mismatch: missing {missing}, '
                               f'unexpected {unexpected}')
    torch.manual_seed(seed + 1)
    ours.roi_head.mask_iou_head.init_weights()
    with torch.no_grad():
        ours.roi_head.mask_iou_head.fc_mask_iou.bias.fill_(0.7)
    mmdet_ms.roi_head.mask_iou_head.load_state_dict(ours.roi_head.mask_iou_head.state_dict(),
                                                    strict=True)
    assert type(mmdet_ms).__module__.startswith('mmdet.'), type(mmdet_ms)
    assert type(ours).__module__.startswith('ms_rcnn.'), type(ours)
    models = dict(mask_rcnn=mask_rcnn, mmdet_ms=mmdet_ms, ours=ours)
    if bf16_head:
        cfg = common.model_config(common.ours_config_path(OURS_CONFIG))
        cfg.test_cfg.rcnn.mask_iou_dtype = 'bfloat16'
        models['ours_bf16_head'] = common.build_model(cfg, device)
        models['ours_bf16_head'].load_state_dict(ours.state_dict(), strict=True)
    for model in models.values():
        model.eval()
    return models


def check_outputs(outputs: Dict[str, list]) -> Dict[str, float]:
    """Same boxes, labels and masks everywhere; scores = classification x MaskIoU.

    ``outputs`` maps each model to its per-image ``pred_instances`` (on the host).
    """
    def cat(name, key):
        return torch.cat([res.get(key).float().flatten() for res in outputs[name]])

    ref_boxes, ref_scores = cat('mask_rcnn', 'bboxes'), cat('mask_rcnn', 'scores')
    out = dict(detections_per_image=ref_scores.numel() / len(outputs['mask_rcnn']))
    worst_box, worst_mask = 0.0, 0.0
    for name in [n for n in outputs if n != 'mask_rcnn']:
        boxes = cat(name, 'bboxes')
        if boxes.shape != ref_boxes.shape:
            raise RuntimeError(f'{name}: {boxes.numel() // 4} detections, Mask R-CNN '
                               f'{ref_boxes.numel() // 4}')
        if not torch.equal(cat(name, 'labels'), cat('mask_rcnn', 'labels')):
            raise RuntimeError(f'{name}: labels differ from Mask R-CNN\'s')
        if boxes.numel():
            worst_box = max(worst_box, (boxes - ref_boxes).abs().max().item())
            differing = sum(int((a.masks != b.masks).sum())
                            for a, b in zip(outputs[name], outputs['mask_rcnn']))
            pixels = sum(a.masks.numel() for a in outputs[name])
            worst_mask = max(worst_mask, differing / max(pixels, 1))
    out['box_max_abs_diff'] = worst_box
    out['mask_pixel_disagreement'] = worst_mask
    ours_iou, ours_cls = cat('ours', 'mask_ious'), cat('ours', 'bbox_scores')
    mmdet_iou = cat('mmdet_ms', 'scores') / ref_scores  # mmdet: scores = cls x raw MaskIoU
    out['ours_bbox_scores_vs_mask_rcnn_max_abs_diff'] = (
        (ours_cls - ref_scores).abs().max().item() if ref_scores.numel() else 0.0)
    out['ours_mask_iou_vs_mmdet_clamped_max_abs_diff'] = (
        (ours_iou - mmdet_iou.clamp(0, 1)).abs().max().item() if ref_scores.numel() else 0.0)
    out['mean_mask_iou'] = ours_iou.mean().item() if ours_iou.numel() else float('nan')
    if 'ours_bf16_head' in outputs:
        out['ours_bf16_head_mask_iou_vs_ours_max_abs_diff'] = (
            (cat('ours_bf16_head', 'mask_ious') - ours_iou).abs().max().item()
            if ours_iou.numel() else 0.0)
    return out


def native_bf16(device: torch.device) -> Optional[bool]:
    """Whether the device computes in bfloat16 natively (None: cannot tell)."""
    if device.type == 'cuda':
        return torch.cuda.is_bf16_supported()
    from ms_rcnn.models.mask_scoring_roi_head import cpu_has_native
    return cpu_has_native(torch.bfloat16)


def layer_macs(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> int:
    """Multiply-accumulates of one call of a conv, transposed conv or linear layer."""
    if isinstance(module, torch.nn.ConvTranspose2d):  # each input value feeds k*k*out/groups
        kh, kw = module.kernel_size
        return inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, torch.nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, torch.nn.Linear):
        return output.numel() * module.in_features
    return 0


def count_macs(model: torch.nn.Module, data: dict) -> Dict[str, int]:
    """MACs of one ``test_step`` per part of the detector (conv and linear layers only).

    Parts are ``backbone``, ``neck``, ``rpn_head`` and each head of ``roi_head``.
    """
    totals: Dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            parts = name.split('.')
            part = '.'.join(parts[:2]) if parts[0] == 'roi_head' else parts[0]

            def hook(mod, inputs, output, part=part):
                totals[part] = totals.get(part, 0) + layer_macs(mod, inputs, output)

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.test_step(data)
    finally:
        for handle in handles:
            handle.remove()
    return totals


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, default_threads=None, default_repeats=5)
    parser.add_argument('--size', type=common.parse_size, default=None,
                        help='image HxW (default: 512x672 on CPU, 800x1216 on CUDA)')
    parser.add_argument('--batches', type=common.positive_int, nargs='+', default=None,
                        help='batch sizes (default: 1 4; with --small: 1 2)')
    parser.add_argument('--hot-classes', type=common.positive_int, default=5,
                        help='classes whose classifier bias is raised (see above)')
    parser.add_argument('--hot-bias', type=float, default=3.0,
                        help='added to those classes\' classifier bias')
    parser.add_argument('--no-bf16-head', dest='bf16_head', action='store_false',
                        help='leave out ours with the MaskIoU head in bfloat16')
    args = parser.parse_args(argv)
    device = common.setup(args)
    common.quiet_mmengine()
    args.size = common.default_size(args, device)
    if args.batches is None:
        args.batches = [1, 2] if args.small else [1, 4]
    height, width = args.size

    sizes = dict(models='mmdet Mask R-CNN (' + MASK_RCNN_CONFIG + '), mmdet MS R-CNN ('
                 + MMDET_MS_CONFIG + '), ours (configs/' + OURS_CONFIG + '); R-50-FPN, '
                 '80 classes, shared weights', images=f'{height}x{width}',
                 batches=args.batches,
                 detections=f'classifier bias +{args.hot_bias} on {args.hot_classes} classes '
                            '(~100 detections per image)',
                 call='model.test_step(data) under eval() and no_grad(), rescale=True',
                 native_bf16=native_bf16(device))
    header = common.make_header('Inference: Mask R-CNN vs mmdet MS R-CNN vs ours', args,
                                device, sizes)
    models = build_models(args.seed, device, args.hot_classes, args.hot_bias, args.bf16_head)

    rng = np.random.default_rng(args.seed)
    results, rows, guards = {}, [], {}
    for batch in args.batches:
        data = common.detection_batch(rng, batch, height, width, 80, with_gt=False)
        first: Dict[str, list] = {}

        # The MaskIoU head's own forward time inside each timed call (no extra syncs).
        timers = {name: common.ForwardTimer(model.roi_head.mask_iou_head, device)
                  for name, model in models.items() if hasattr(model.roi_head, 'mask_iou_head')}

        def on_result(name, rnd, out):
            if name in timers:
                timers[name].end_call(keep=rnd >= 0)
            if name not in first:  # keep the first outputs on the host for the guards
                first[name] = [sample.pred_instances.cpu() for sample in out]

        def run(name):
            def call(d):
                with torch.no_grad():
                    return models[name].test_step(d)
            return call

        sides = [common.Side(name, run(name), lambda i: copy.deepcopy(data))
                 for name in models]
        res = common.run_interleaved(sides, args.repeats, args.warmup, device, memory=True,
                                     on_result=on_result)
        guards[batch] = check_outputs(first)
        base = res['mask_rcnn']['median_s']
        for name, timer in timers.items():
            timer.remove()
            head = statistics.median(timer.per_call_s)
            res[name].update(mask_iou_head_times_s=timer.per_call_s, mask_iou_head_median_s=head,
                             mask_iou_head_pct_of_mask_rcnn=100.0 * head / base)
        for name, r in res.items():
            r['latency_per_image_s'] = r['median_s'] / batch
            r['throughput_img_per_s'] = batch / r['median_s']
            r['overhead_vs_mask_rcnn_pct'] = 100.0 * (r['median_s'] / base - 1.0)
            rows.append([f'batch {batch}', name, common.ms(r['latency_per_image_s']),
                         f'{r["throughput_img_per_s"]:.2f}',
                         f'{r["overhead_vs_mask_rcnn_pct"]:+.1f}%' if name != 'mask_rcnn'
                         else '-', common.mib(r.get('mem_median_bytes'))])
        res['mmdet_ms_vs_ours'] = common.ratio(res, 'mmdet_ms', 'ours')
        results[batch] = res

    # Compute: how much the scoring head adds in multiply-accumulates, which bounds the
    # overhead on a compute-bound device (a CPU); a GPU runs the head's small batched convs in a
    # fraction of the time its FLOPs suggest.
    data = common.detection_batch(rng, 1, height, width, 80, with_gt=False)
    macs = {name: count_macs(models[name], copy.deepcopy(data)) for name in ('mask_rcnn', 'ours')}
    base_macs = sum(macs['mask_rcnn'].values())
    head_macs = macs['ours'].get('roi_head.mask_iou_head', 0)
    compute = dict(mask_rcnn_gmac=base_macs / 1e9, mask_iou_head_gmac=head_macs / 1e9,
                   mask_iou_head_pct_of_mask_rcnn=100.0 * head_macs / max(base_macs, 1),
                   parts_gmac={k: v / 1e9 for k, v in sorted(macs['ours'].items())})

    mem_label = 'peak MiB' if device.type == 'cuda' else 'peak RSS+ MiB'
    print(f'Inference, {height}x{width}, median of {args.repeats}:')
    common.print_table(['batch', 'model', 'ms/img', 'img/s', 'overhead', mem_label], rows)
    for batch in args.batches:
        rat, g = results[batch]['mmdet_ms_vs_ours'], guards[batch]
        print(f'batch {batch}: mmdet MS / ours = {rat["ratio_of_medians"]:.3f}x '
              f'(paired {rat["median_paired_ratio"]:.3f}x); '
              f'{g["detections_per_image"]:.0f} detections/img; guards: box diff '
              f'{g["box_max_abs_diff"]:.1e}, mask pixels differing '
              f'{g["mask_pixel_disagreement"]:.1e}, ours bbox_scores vs Mask R-CNN scores '
              f'{g["ours_bbox_scores_vs_mask_rcnn_max_abs_diff"]:.1e}, ours mask_ious vs mmdet '
              f'(clamped) {g["ours_mask_iou_vs_mmdet_clamped_max_abs_diff"]:.1e}'
              + (f', ours_bf16_head mask_ious vs ours '
                 f'{g["ours_bf16_head_mask_iou_vs_ours_max_abs_diff"]:.1e}'
                 if 'ours_bf16_head_mask_iou_vs_ours_max_abs_diff' in g else ''))
    for batch in args.batches:
        res = results[batch]
        print(f'batch {batch}: the MaskIoU head\'s forward inside the call (median) takes '
              + ', '.join(f'{name} {common.ms(r["mask_iou_head_median_s"])} ms = '
                          f'{r["mask_iou_head_pct_of_mask_rcnn"]:.1f}% of Mask R-CNN\'s call'
                          for name, r in res.items() if 'mask_iou_head_median_s' in r))
    print(f'memory: {results[args.batches[0]]["ours"].get("mem_method", "not measured")}')
    print(f'compute, batch 1 (conv + linear MACs): Mask R-CNN {compute["mask_rcnn_gmac"]:.1f} '
          f'GMAC/img; the MaskIoU head adds {compute["mask_iou_head_gmac"]:.1f} GMAC = '
          f'{compute["mask_iou_head_pct_of_mask_rcnn"]:.1f}% ('
          + ', '.join(f'{k} {v:.1f}' for k, v in compute['parts_gmac'].items()) + ')')

    payload = dict(header=header, results={str(b): r for b, r in results.items()},
                   guards={str(b): g for b, g in guards.items()}, compute=compute)
    common.write_json(args.json, payload)
    return payload


if __name__ == '__main__':
    main()
