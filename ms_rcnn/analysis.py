"""Does the mask score track mask quality? The paper's analysis, as reusable functions.

For every detection we keep its classification score, its predicted MaskIoU (MS R-CNN only), its
mask score and the true IoU of its mask with the best-matching ground-truth instance of its
class. From these: correlations with the true IoU, the MaskIoU error, and COCO segm AP with the
masks ranked three ways (classification score, mask score, classification score x true IoU:
the paper's upper bound).
"""
import contextlib
import io
from typing import Dict, List, Optional, Sequence

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.stats import pearsonr, spearmanr

#: Record fields; ``mask_iou`` is NaN for models without a MaskIoU head, ``box_iou`` (IoU of
#: the detected box with the best ground-truth box of its class) NaN when boxes are not given.
FIELDS = ('image_id', 'category_id', 'bbox_score', 'mask_iou', 'mask_score', 'true_iou',
          'box_iou')

#: Box IoU from which a detection counts as matched: the RoIs the MaskIoU head is trained on
#: (positives of the R-CNN assigner) have at least this IoU with their ground truth.
MATCHED_BOX_IOU = 0.5


def best_box_ious(det_boxes: np.ndarray, det_cats: Sequence[int], gt_boxes: np.ndarray,
                  gt_cats: Sequence[int]) -> np.ndarray:
    """IoU of each detected box with the best ground-truth box of its class.

    Args:
        det_boxes (np.ndarray): Detected boxes (x1, y1, x2, y2), shape (D, 4).
        det_cats (Sequence[int]): Category id of each detection.
        gt_boxes (np.ndarray): Ground-truth boxes (x, y, w, h) as in COCO, shape (G, 4).
        gt_cats (Sequence[int]): Category id of each ground-truth box.

    Returns:
        np.ndarray: Shape (D,), 0 where the image has no instance of the class.
    """
    det_boxes = np.asarray(det_boxes, dtype=np.float64).reshape(-1, 4)
    xywh = np.concatenate([det_boxes[:, :2], det_boxes[:, 2:] - det_boxes[:, :2]], 1)
    return best_iou_of_class(xywh.tolist(), det_cats,
                             np.asarray(gt_boxes, float).reshape(-1, 4).tolist(), gt_cats)


def best_iou_of_class(dets: list, det_cats: Sequence[int], gts: list,
                      gt_cats: Sequence[int]) -> np.ndarray:
    """IoU of each detection with the best ground truth of its class (pycocotools' ``iou``).

    Args:
        dets (list): D detections, all RLEs or all (x, y, w, h) boxes.
        det_cats (Sequence[int]): Category id of each detection.
        gts (list): G ground truths of the same kind (non-crowd).
        gt_cats (Sequence[int]): Category id of each ground truth.

    Returns:
        np.ndarray: Shape (D,), 0 where the image has no instance of the class.
    """
    if len(dets) == 0 or len(gts) == 0:
        return np.zeros(len(dets))
    ious = np.asarray(mask_utils.iou(dets, gts, [0] * len(gts))).reshape(len(dets), len(gts))
    same_class = np.asarray(det_cats)[:, None] == np.asarray(gt_cats)[None, :]
    return np.where(same_class, ious, 0.0).max(1)


def image_records(coco: COCO, image_id: int, det_rles: List[dict], det_cats: Sequence[int],
                  bbox_scores: np.ndarray, mask_scores: np.ndarray,
                  mask_ious: Optional[np.ndarray],
                  det_boxes: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Per-detection records of one image (see :data:`FIELDS`)."""
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False))
    gt_rles = [coco.annToRLE(a) for a in anns]
    gt_cats = [a['category_id'] for a in anns]
    num = len(det_rles)
    box_iou = np.full(num, np.nan) if det_boxes is None else best_box_ious(
        det_boxes, det_cats, np.asarray([a['bbox'] for a in anns]).reshape(-1, 4), gt_cats)
    return dict(
        image_id=id_array([image_id] * num),
        category_id=id_array(det_cats),
        bbox_score=np.asarray(bbox_scores, dtype=np.float64).reshape(num),
        mask_iou=(np.full(num, np.nan) if mask_ious is None else
                  np.asarray(mask_ious, dtype=np.float64).reshape(num)),
        mask_score=np.asarray(mask_scores, dtype=np.float64).reshape(num),
        true_iou=best_iou_of_class(det_rles, det_cats, gt_rles, gt_cats),
        box_iou=box_iou)


def id_array(ids: Sequence) -> np.ndarray:
    """COCO ids as an array: int64 for integer ids (also when there are none), else object
    (string ids, which COCO files may use), so that :func:`plain_id` gives them back."""
    if all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in ids):
        return np.asarray(ids, dtype=np.int64).reshape(len(ids))
    array = np.empty(len(ids), dtype=object)
    array[:] = list(ids)
    return array


def plain_id(value):
    """A record's id as the annotation file has it (a Python int or str)."""
    return value.item() if isinstance(value, np.generic) else value


def concat_records(records: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Join per-image records into arrays of all detections."""
    if not records:
        return {k: np.zeros(0) for k in FIELDS}
    return {k: np.concatenate([r[k] for r in records]) for k in FIELDS}


def correlations(score: np.ndarray, truth: np.ndarray) -> Dict[str, float]:
    """Pearson and Spearman correlation; NaN when either side is constant or too short."""
    score, truth = np.asarray(score, float), np.asarray(truth, float)
    if len(score) < 3 or np.ptp(score) == 0 or np.ptp(truth) == 0:
        return dict(pearson=float('nan'), spearman=float('nan'))
    return dict(pearson=float(pearsonr(score, truth)[0]),
                spearman=float(spearmanr(score, truth)[0]))


def segm_ap(coco: COCO, records: Dict[str, np.ndarray], rles: List[dict],
            scores: np.ndarray, cat_ids: Optional[Sequence] = None) -> Dict[str, float]:
    """COCO segm AP, AP50 and AP75 of the detections ranked by ``scores``.

    Args:
        coco (COCO): Ground truth.
        records (dict): Records of all detections (for image and category ids).
        rles (list[dict]): Detected masks, aligned with the records.
        scores (np.ndarray): The ranking score of each detection.
        cat_ids (Sequence, optional): The categories to average over: the dataset's classes,
            as ``MaskScoringCocoMetric`` does. Defaults to every category of the file.

    Returns:
        dict: ``AP``, ``AP50``, ``AP75`` (0 to 100): 0 without detections, NaN without
        ground truth either.
    """
    cat_ids = coco.getCatIds() if cat_ids is None else list(cat_ids)
    if len(rles) == 0:
        value = 0.0 if coco.getAnnIds(catIds=cat_ids, iscrowd=False) else float('nan')
        return dict(AP=value, AP50=value, AP75=value)
    results = [
        dict(image_id=plain_id(i), category_id=plain_id(c), segmentation=r, score=float(s))
        for i, c, r, s in zip(records['image_id'], records['category_id'], rles, scores)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        dets = coco.loadRes(results)
        evaluator = COCOeval(coco, dets, 'segm')
        evaluator.params.imgIds = sorted(coco.getImgIds())  # the detections' images among them
        evaluator.params.catIds = sorted(cat_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # COCOeval's -1 means there was nothing to average: no ground truth of any category.
    ap, ap50, ap75 = (100 * float(v) if v >= 0 else float('nan') for v in evaluator.stats[:3])
    return dict(AP=ap, AP50=ap50, AP75=ap75)


def summarize(coco: COCO, records: Dict[str, np.ndarray], rles: List[dict],
              has_mask_iou_head: Optional[bool] = None,
              cat_ids: Optional[Sequence] = None) -> dict:
    """The full report: correlations, MaskIoU error and the three rankings' segm AP.

    Models without a MaskIoU head get the classification-score rows and the upper bound only.

    Args:
        coco (COCO): Ground truth.
        records (dict): Records of all detections (see :data:`FIELDS`).
        rles (list[dict]): Detected masks, aligned with the records.
        has_mask_iou_head (bool, optional): Whether the model has a MaskIoU head. Defaults to
            whether every detection has a predicted IoU (which cannot tell a model without a
            head from one whose head predicts NaN everywhere, nor say anything without
            detections).
        cat_ids (Sequence, optional): The categories AP averages over (the dataset's
            classes). Defaults to every category of the file.

    Raises:
        ValueError: A MaskIoU head predicted NaN (a broken model, not one without a head).
    """
    truth = records['true_iou']
    no_iou = np.isnan(records['mask_iou'])
    if has_mask_iou_head is None:
        has_mask_iou_head = len(truth) > 0 and not no_iou.all()
    if has_mask_iou_head and no_iou.any():
        raise ValueError(f'the MaskIoU head predicted NaN for {int(no_iou.sum())} of '
                         f'{len(no_iou)} detections: the weights are broken (look for a '
                         f'non-finite loss in the training log)')
    has_iou = bool(has_mask_iou_head)

    def ap(scores: np.ndarray) -> Dict[str, float]:
        return segm_ap(coco, records, rles, scores, cat_ids)

    report = dict(num_detections=int(len(truth)), has_mask_iou_head=has_iou,
                  correlation=dict(classification_score=correlations(records['bbox_score'],
                                                                     truth)),
                  segm_ap=dict(by_classification_score=ap(records['bbox_score'])))
    if has_iou:
        report['correlation']['predicted_mask_iou'] = correlations(records['mask_iou'], truth)
        report['correlation']['mask_score'] = correlations(records['mask_score'], truth)
        report['mask_iou_mae'] = mean_abs_error(records['mask_iou'], truth)
        report['segm_ap']['by_mask_score'] = ap(records['mask_score'])
    report['segm_ap']['by_classification_score_x_true_iou'] = ap(records['bbox_score'] * truth)
    box_iou = records.get('box_iou')
    if has_iou and box_iou is not None and not np.isnan(box_iou).all():
        report['matched'] = matched_summary(records)
    return report


def matched_summary(records: Dict[str, np.ndarray],
                    min_box_iou: float = MATCHED_BOX_IOU) -> dict:
    """Correlations and MaskIoU error over the matched detections only.

    The MaskIoU head is trained on positive RoIs only (box IoU >= 0.5 with their ground truth,
    as in the paper), so this is how well it does on the kind of input it learned from; the
    full report adds the unmatched detections (false positives), which it never saw.
    """
    keep = records['box_iou'] >= min_box_iou
    truth = records['true_iou'][keep]
    return dict(
        min_box_iou=min_box_iou, num_detections=int(keep.sum()),
        correlation=dict(
            classification_score=correlations(records['bbox_score'][keep], truth),
            predicted_mask_iou=correlations(records['mask_iou'][keep], truth),
            mask_score=correlations(records['mask_score'][keep], truth)),
        mask_iou_mae=mean_abs_error(records['mask_iou'][keep], truth))


def mean_abs_error(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute difference; NaN (without a warning) when there is nothing to average."""
    return float(np.abs(predicted - truth).mean()) if len(truth) else float('nan')


def calibration_curve(predicted: np.ndarray, truth: np.ndarray,
                      bins: int = 10) -> Dict[str, List[float]]:
    """Mean true IoU per bin of predicted IoU (bins over [0, 1]; empty bins left out)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(predicted, edges) - 1, 0, bins - 1)
    curve = dict(predicted=[], true=[], count=[])
    for b in range(bins):
        sel = which == b
        if sel.any():
            curve['predicted'].append(float(predicted[sel].mean()))
            curve['true'].append(float(truth[sel].mean()))
            curve['count'].append(int(sel.sum()))
    return curve


def plot_report(records: Dict[str, np.ndarray], path: str, title: str = '',
                has_mask_iou_head: Optional[bool] = None) -> None:
    """Score against true IoU for the classification and mask scores, and a calibration curve
    of predicted against true IoU, side by side, written to ``path`` (PNG).
    ``has_mask_iou_head`` as in :func:`summarize`."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    truth = records['true_iou']
    has_iou = (len(truth) > 0 and not np.isnan(records['mask_iou']).any()
               if has_mask_iou_head is None else has_mask_iou_head)
    panels = 3 if has_iou else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.5), squeeze=False)
    axes = axes[0]
    scatter = [('classification score', records['bbox_score'])]
    if has_iou:
        scatter.append(('mask score (cls x MaskIoU)', records['mask_score']))
    for ax, (name, score) in zip(axes, scatter):
        corr = correlations(score, truth)
        ax.scatter(truth, score, s=6, alpha=0.5)
        ax.set(xlabel='true mask IoU', ylabel=name, xlim=(0, 1), ylim=(0, 1),
               title=f'{name}\nPearson {corr["pearson"]:.3f}, Spearman {corr["spearman"]:.3f}')
    if has_iou:
        curve = calibration_curve(records['mask_iou'], truth)
        ax = axes[2]
        ax.plot([0, 1], [0, 1], 'k--', lw=1, label='ideal')
        ax.plot(curve['predicted'], curve['true'], 'o-', label='MaskIoU head')
        mae = mean_abs_error(records['mask_iou'], truth)
        ax.set(xlabel='predicted MaskIoU', ylabel='mean true IoU', xlim=(0, 1), ylim=(0, 1),
               title=f'calibration (MAE {mae:.3f})')
        ax.legend(loc='upper left')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_report(report: dict) -> str:
    """A human-readable table of the report."""
    lines = [f"detections: {report['num_detections']}", 'correlation with the true IoU:']
    for name, corr in report['correlation'].items():
        lines.append(f"  {name:<22} Pearson {corr['pearson']:7.3f}  "
                     f"Spearman {corr['spearman']:7.3f}")
    if 'mask_iou_mae' in report:
        lines.append(f"MaskIoU mean absolute error: {report['mask_iou_mae']:.3f}")
    if 'matched' in report:
        matched = report['matched']
        lines.append(f"matched detections (box IoU >= {matched['min_box_iou']}): "
                     f"{matched['num_detections']}")
        for name, corr in matched['correlation'].items():
            lines.append(f"  {name:<22} Pearson {corr['pearson']:7.3f}  "
                         f"Spearman {corr['spearman']:7.3f}")
        lines.append(f"  MaskIoU mean absolute error: {matched['mask_iou_mae']:.3f}")
    lines.append('segm AP with masks ranked')
    for name, ap in report['segm_ap'].items():
        lines.append(f"  {name:<36} AP {ap['AP']:6.2f}  AP50 {ap['AP50']:6.2f}  "
                     f"AP75 {ap['AP75']:6.2f}")
    return '\n'.join(lines)
