"""Benchmark MaskIoU target computation: ms_rcnn's MaskIoUHead.get_targets vs mmdet's.

Both heads get identical inputs: images with GT instances that are random simple star-shaped
polygons, given either as PolygonMasks or as the same instances rasterised into uint8
contiguous BitmapMasks (what mmdet's LoadAnnotations(poly2mask=True) produces); positive
proposals jittered around their assigned GT boxes (IoU > 0.5, like real positives); mask
logits (P, 28, 28) and binary mask targets (P, 28, 28) cropped from the GT. Only
``get_targets`` is timed (area ratios + IoU), the part the two implementations differ in.

Ours binarises predictions at probability 0.5 (logit 0), mmdet at logit 0.5, so the targets
differ by design. The correctness guards therefore compare (1) the area ratios (ours
``mask_iou_math.batch_area_ratios``, as get_targets calls it, and the one-image
``area_ratios``, vs mmdet ``MaskIoUHead()._get_area_ratio``) and (2) the targets with mmdet
given ``mask_thr_binary=0`` (then both binarise at logit 0).

    python tools/benchmark/bench_mask_iou_targets.py                # CUDA if available
    python tools/benchmark/bench_mask_iou_targets.py --device cpu --threads 1 --repeats 20
"""
import argparse
import os.path as osp
import sys
import types
from typing import Any, Dict, List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import bench_common as common  # noqa: E402

MASK_SIZE = 28


def mask_targets(masks: np.ndarray, boxes: np.ndarray, inds: np.ndarray) -> np.ndarray:
    """Binary (P, 28, 28) targets as mmdet's ``BitmapMasks.crop_and_resize`` makes them
    (RoIAlign, aligned, then >= 0.5), without its (P, H, W) float copy of the masks."""
    from mmcv.ops import roi_align
    rois = torch.cat([torch.from_numpy(inds).float()[:, None], torch.from_numpy(boxes)], 1)
    feats = torch.from_numpy(masks).float()[:, None].contiguous()  # mmcv needs contiguous
    out = roi_align(feats, rois, (MASK_SIZE, MASK_SIZE), 1.0, 0, 'avg', True).squeeze(1)
    return (out >= 0.5).float().numpy()


def make_inputs(rng: np.random.Generator, num_images: int, height: int, width: int,
                num_gt: int, pos_per_img: int, device: torch.device) -> Dict[str, Any]:
    """Identical inputs of both heads, with bitmap and polygon variants of the GT."""
    from mmdet.structures.mask import BitmapMasks, PolygonMasks
    from mmengine.structures import InstanceData
    polygon_gts, bitmap_gts, results, preds, targets = [], [], [], [], []
    for _ in range(num_images):
        polys = common.star_polygons(rng, num_gt, height, width)
        poly_masks = PolygonMasks(polys, height, width)
        bitmaps = BitmapMasks(
            np.ascontiguousarray(poly_masks.to_bitmap().masks.astype(np.uint8)), height, width)
        boxes, inds = common.jittered_boxes(rng, common.polygon_boxes(polys), pos_per_img,
                                            height, width)
        target = mask_targets(bitmaps.masks, boxes, inds)
        # Logits that mostly agree with the target, with errors near the boundary and noise.
        logits = (2 * target - 1) * 2.0 + rng.normal(0.0, 2.0, target.shape)
        polygon_gts.append(InstanceData(masks=poly_masks))
        bitmap_gts.append(InstanceData(masks=bitmaps))
        results.append(types.SimpleNamespace(
            pos_priors=torch.from_numpy(boxes).to(device),
            pos_assigned_gt_inds=torch.from_numpy(inds).long().to(device)))
        preds.append(logits)
        targets.append(target)
    return dict(
        polygon=polygon_gts, bitmap=bitmap_gts, sampling_results=results,
        mask_preds=torch.from_numpy(np.concatenate(preds)).float().to(device),
        mask_targets=torch.from_numpy(np.concatenate(targets)).float().to(device))


class Heads:
    """Both heads and the guards."""

    def __init__(self):
        from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead
        from mmengine.config import ConfigDict

        from ms_rcnn.models import MaskIoUHead
        with common.mmdet_scope():  # both build mmdet's MSELoss
            self.ours = MaskIoUHead()
            self.mmdet = MMDetMaskIoUHead()
        self.cfg = ConfigDict(mask_thr_binary=0.5)
        self.cfg_logit0 = ConfigDict(mask_thr_binary=0.0)

    def sides(self, inputs: Dict[str, Any], mask_type: str) -> List[common.Side]:
        gts = inputs[mask_type]
        args = (inputs['sampling_results'], gts, inputs['mask_preds'], inputs['mask_targets'])
        return [
            common.Side('mmdet', lambda _: self.mmdet.get_targets(*args, self.cfg)),
            common.Side('ours', lambda _: self.ours.get_targets(*args, self.cfg)),
        ]

    def host_syncs(self, inputs: Dict[str, Any], mask_type: str,
                   device: torch.device) -> Dict[str, Dict[str, Any]]:
        """Per side, for one get_targets call (CUDA only, else None): the synchronising
        operations torch counts, and whether the host waited for queued device work."""
        return {side.name: dict(counted=common.count_host_syncs(lambda: side.run(None), device),
                                waited=common.host_waits(lambda: side.run(None), device))
                for side in self.sides(inputs, mask_type)}

    def guards(self, inputs: Dict[str, Any], mask_type: str) -> Dict[str, float]:
        from ms_rcnn.models.mask_iou_math import area_ratios, batch_area_ratios
        gts = inputs[mask_type]
        res = inputs['sampling_results']
        # What get_targets uses (all images at once), and the one-image entry point.
        ours_r = batch_area_ratios([gt.masks for gt in gts], [r.pos_priors for r in res],
                                   [r.pos_assigned_gt_inds for r in res])
        ours_single = torch.cat([area_ratios(gt.masks, r.pos_priors, r.pos_assigned_gt_inds)
                                 for r, gt in zip(res, gts)])
        mmdet_r = torch.cat([self.mmdet._get_area_ratio(r.pos_priors, r.pos_assigned_gt_inds,
                                                        gt.masks) for r, gt in zip(res, gts)])
        mmdet_r = mmdet_r.float().to(ours_r.device)
        args = (res, gts, inputs['mask_preds'], inputs['mask_targets'])
        ours_t = self.ours.get_targets(*args, self.cfg)
        mmdet_t0 = self.mmdet.get_targets(*args, self.cfg_logit0)
        mmdet_t = self.mmdet.get_targets(*args, self.cfg)
        return dict(
            area_ratio_max_abs_diff=max((ours_r - mmdet_r).abs().max().item(),
                                        (ours_single - mmdet_r).abs().max().item()),
            target_max_abs_diff_mmdet_at_logit0=(ours_t - mmdet_t0).abs().max().item(),
            target_mean_abs_diff_by_design=(ours_t - mmdet_t).abs().mean().item(),
            mean_area_ratio=ours_r.float().mean().item(),
            mean_target=ours_t.mean().item())


def bench_case(heads: Heads, inputs, mask_type: str, args, device) -> Dict[str, Any]:
    res = common.run_interleaved(heads.sides(inputs, mask_type), args.repeats, args.warmup,
                                 device)
    out = dict(times=res, **common.ratio(res, 'mmdet', 'ours'))
    out['guards'] = heads.guards(inputs, mask_type)
    out['host_syncs_per_call'] = heads.host_syncs(inputs, mask_type, device)
    return out


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_args(parser, default_threads=1, default_repeats=10)
    parser.add_argument('--num-gt', type=common.positive_int, default=12,
                        help='GT instances per image')
    parser.add_argument('--no-scaling', action='store_true', help='skip the scaling table')
    parser.add_argument('--guard-tol', type=float, default=1e-4,
                        help='largest area-ratio difference accepted (exit status 1 beyond)')
    args = parser.parse_args(argv)
    device = common.setup(args)

    num_images = 2
    if args.small:
        size, cases_pos, num_gt = (200, 304), (16, 32), min(args.num_gt, 4)
        scale_sizes, scale_pos = [(100, 152), (200, 304)], (8, 16)
    else:
        size, cases_pos, num_gt = (800, 1216), (128, 512), args.num_gt
        scale_sizes, scale_pos = [(400, 608), (800, 1216), (1200, 1824)], (32, 128, 512)
    sizes = dict(images=f'{num_images} of {size[0]}x{size[1]}', gt_per_image=num_gt,
                 mask_size=f'{MASK_SIZE}x{MASK_SIZE}',
                 cases=', '.join(f'{t} {p} pos/img' for p in cases_pos
                                 for t in ('bitmap', 'polygon')),
                 scaling=('skipped' if args.no_scaling else
                          f'bitmap, pos/img {list(scale_pos)} x sizes '
                          + ', '.join(f'{h}x{w}' for h, w in scale_sizes)),
                 note='GT masks stay on the host (as in training); proposals, logits and '
                      'targets are on the device')
    header = common.make_header('MaskIoU targets: mmdet MaskIoUHead.get_targets vs ours',
                                args, device, sizes)
    heads = Heads()
    rng = np.random.default_rng(args.seed)

    cases, rows, worst = [], [], 0.0
    for pos in cases_pos:
        inputs = make_inputs(rng, num_images, size[0], size[1], num_gt, pos, device)
        for mask_type in ('bitmap', 'polygon'):
            out = bench_case(heads, inputs, mask_type, args, device)
            out.update(mask_type=mask_type, pos_per_img=pos, height=size[0], width=size[1])
            cases.append(out)
            g = out['guards']
            worst = max(worst, g['area_ratio_max_abs_diff'])
            rows.append([f'{mask_type} {pos} pos/img', common.ms(out['times']['mmdet']['median_s']),
                         common.ms(out['times']['ours']['median_s']),
                         f'{out["ratio_of_medians"]:.1f}x', f'{out["median_paired_ratio"]:.1f}x',
                         f'{g["area_ratio_max_abs_diff"]:.1e}',
                         f'{g["target_max_abs_diff_mmdet_at_logit0"]:.1e}'])
    print(f'Cases ({num_images} images of {size[0]}x{size[1]}, {num_gt} GT each; '
          'median ms per get_targets call for the whole batch):')
    common.print_table(['case', 'mmdet ms', 'ours ms', 'mmdet/ours', 'paired', 'ratio diff',
                        'target diff@0'], rows)
    if device.type == 'cuda':
        print('Host syncs per get_targets call (counted by torch.cuda\'s sync debug mode, a '
              'lower bound; "waited": the host waited for queued device work):')
        common.print_table(
            ['case', 'mmdet syncs', 'mmdet waited', 'ours syncs', 'ours waited'],
            [[f'{c["mask_type"]} {c["pos_per_img"]} pos/img']
             + [c['host_syncs_per_call'][side][key] for side in ('mmdet', 'ours')
                for key in ('counted', 'waited')] for c in cases])

    scaling, rows = [], []
    if not args.no_scaling:
        for h, w in scale_sizes:
            for pos in scale_pos:
                inputs = make_inputs(rng, num_images, h, w, num_gt, pos, device)
                out = bench_case(heads, inputs, 'bitmap', args, device)
                out.update(mask_type='bitmap', pos_per_img=pos, height=h, width=w)
                scaling.append(out)
                worst = max(worst, out['guards']['area_ratio_max_abs_diff'])
                rows.append([f'{h}x{w}', pos, common.ms(out['times']['mmdet']['median_s']),
                             common.ms(out['times']['ours']['median_s']),
                             f'{out["ratio_of_medians"]:.1f}x',
                             f'{out["guards"]["area_ratio_max_abs_diff"]:.1e}'])
        print(f'Scaling, bitmap masks ({num_images} images, {num_gt} GT each; median ms per '
              'call):')
        common.print_table(['image', 'pos/img', 'mmdet ms', 'ours ms', 'mmdet/ours',
                            'ratio diff'], rows)

    ok = worst <= args.guard_tol
    print('Guards: "ratio diff" = max |ours area ratio - mmdet _get_area_ratio|; '
          '"target diff@0" = max |ours targets - mmdet targets with mask_thr_binary=0| '
          '(both then binarise at logit 0; at the configs\' 0.5 they differ by design).')
    print(f'Area ratios {"AGREE" if ok else "DISAGREE"}: worst difference {worst:.2e} '
          f'(tolerance {args.guard_tol:g}).')
    payload = dict(header=header, cases=cases, scaling=scaling,
                   area_ratio_worst_abs_diff=worst, guards_ok=ok)
    common.write_json(args.json, payload)
    if not ok and argv is None:
        sys.exit(1)
    return payload


if __name__ == '__main__':
    main()
