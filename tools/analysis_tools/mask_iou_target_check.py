r"""Check the MaskIoU training targets against the true IoU of the pasted masks.

The paper computes a positive RoI's target at RoI resolution (S x S, 28): the binarised
predicted mask against the RoI's mask target, with the ground truth's full area recovered from
the fraction of the instance inside the RoI. This tool runs the training forward pass of a
checkpoint (losses only, no update) over training images, records every positive RoI's target,
and compares it with the IoU of the same prediction pasted into the image (mmdet's paste,
binarised at ``mask_thr_binary``) against the instance's full ground-truth mask.

    python tools/analysis_tools/mask_iou_target_check.py CONFIG CHECKPOINT \
        [--data-root DIR] [--num-images 50] [--json OUT.json]

It prints the number of positive RoIs, the Pearson and Spearman correlation between target and
pasted IoU, the mean absolute and mean signed difference, and the same over targets > 0 (the
RoIs that enter the loss).
"""
import argparse
import os.path as osp
import sys
from typing import Dict, List, Optional

import numpy as np
import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import ms_rcnn  # noqa: E402,F401
from ms_rcnn.analysis import correlations  # noqa: E402
from ms_rcnn.models.mask_iou_math import logit_threshold  # noqa: E402
from ms_rcnn.utils.checkpoint import check_checkpoint_fits  # noqa: E402
from ms_rcnn.utils.cli import checked_device, run_tool  # noqa: E402
from ms_rcnn.utils.config import ConfigError, load_config  # noqa: E402
from ms_rcnn.utils.json_report import write_json  # noqa: E402


def pasted_ious(mask_logits: torch.Tensor, boxes: torch.Tensor, gt_masks: np.ndarray,
                gt_inds: torch.Tensor, logit_thr: float) -> np.ndarray:
    """IoU of each RoI's predicted mask, pasted into the image, with its whole GT instance.

    Args:
        mask_logits (Tensor): Mask logits of each positive's class, shape (P, S, S).
        boxes (Tensor): The positive RoIs (x1, y1, x2, y2), shape (P, 4).
        gt_masks (np.ndarray): The image's GT bitmaps, shape (G, H, W).
        gt_inds (Tensor): GT instance of each RoI, shape (P,).
        logit_thr (float): Logit above which a pixel is foreground.

    Returns:
        np.ndarray: Shape (P,).
    """
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    height, width = gt_masks.shape[-2:]
    probs = mask_logits[:, None].float().sigmoid()
    pasted, _ = _do_paste_mask(probs, boxes.float(), height, width, skip_empty=False)
    pred = pasted > torch.sigmoid(torch.tensor(logit_thr))
    gt = torch.from_numpy(np.ascontiguousarray(gt_masks)).bool()[gt_inds.cpu()]
    pred = pred.cpu()
    inter = (pred & gt).flatten(1).sum(1).float()
    union = (pred | gt).flatten(1).sum(1).float().clamp(min=1)
    return (inter / union).numpy()


def agreement(targets: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """Correlation and differences between targets and true IoUs."""
    diff = targets - truth
    out = dict(num_rois=int(len(targets)), **correlations(targets, truth))
    out['mean_abs_diff'] = float(np.abs(diff).mean()) if len(diff) else float('nan')
    out['mean_signed_diff'] = float(diff.mean()) if len(diff) else float('nan')
    return out


def collect(cfg, checkpoint: str, num_images: int, device: str) -> Dict[str, np.ndarray]:
    """Targets and pasted IoUs of the positive RoIs of the first ``num_images`` images."""
    from mmdet.apis import init_detector
    from mmengine.runner import Runner

    model = init_detector(cfg, checkpoint, device=device)
    # The targets depend on the mask branch alone: a Mask R-CNN checkpoint will do.
    check_checkpoint_fits(model, None, checkpoint, may_lack=('roi_head.mask_iou_head.', ))
    model.train()  # the training path: train-time proposals, assigner and sampler
    head = model.roi_head.mask_iou_head
    logit_thr = logit_threshold(model.roi_head.train_cfg.get('mask_thr_binary', 0.5))
    targets: List[np.ndarray] = []
    truth: List[np.ndarray] = []
    original = head.get_targets

    def recording_get_targets(sampling_results, batch_gt_instances, mask_preds, mask_targets,
                              rcnn_train_cfg):
        result = original(sampling_results, batch_gt_instances, mask_preds, mask_targets,
                          rcnn_train_cfg)
        targets.append(result.detach().cpu().numpy())
        start = 0
        for res, gt in zip(sampling_results, batch_gt_instances):
            num = len(res.pos_priors)
            truth.append(pasted_ious(mask_preds[start:start + num].detach(), res.pos_priors,
                                     gt.masks.to_ndarray(), res.pos_assigned_gt_inds,
                                     logit_thr))
            start += num
        return result

    loader_cfg = cfg.train_dataloader.copy()
    loader_cfg.update(batch_size=1, num_workers=0, persistent_workers=False,
                      sampler=dict(type='DefaultSampler', shuffle=False))
    loader = Runner.build_dataloader(loader_cfg)
    head.get_targets = recording_get_targets
    try:
        with torch.no_grad():
            for i, data in enumerate(loader):
                if i >= num_images:
                    break
                data = model.data_preprocessor(data, True)
                model.loss(data['inputs'], data['data_samples'])
    finally:
        head.get_targets = original
    return dict(targets=np.concatenate(targets) if targets else np.zeros(0),
                truth=np.concatenate(truth) if truth else np.zeros(0))


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--data-root', help="dataset root to use instead of the config's")
    parser.add_argument('--num-images', type=int, default=50)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--json', help='also write the report here')
    args = parser.parse_args(argv)
    checked_device(args.device)
    cfg = load_config(args.config, data_root=args.data_root)
    if 'mask_iou_head' not in cfg.model.get('roi_head', {}):
        raise ConfigError(f'{args.config}: model.roi_head has no mask_iou_head, so there are '
                          f'no MaskIoU targets to check')
    rois = collect(cfg, args.checkpoint, args.num_images, args.device)
    valid = rois['targets'] > 0
    report = dict(config=args.config, checkpoint=args.checkpoint, num_images=args.num_images,
                  all=agreement(rois['targets'], rois['truth']),
                  target_above_0=agreement(rois['targets'][valid], rois['truth'][valid]))
    for name in ('all', 'target_above_0'):
        r = report[name]
        print(f"{name:<15} RoIs {r['num_rois']:5d}  Pearson {r['pearson']:.3f}  "
              f"Spearman {r['spearman']:.3f}  mean |target - pasted IoU| "
              f"{r['mean_abs_diff']:.3f}  mean (target - pasted IoU) {r['mean_signed_diff']:+.3f}")
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == '__main__':
    run_tool(main)
