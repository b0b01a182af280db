"""The MaskIoU analysis maths on hand-made detections with known IoUs."""
import contextlib
import io
import math

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from pycocotools.coco import COCO

from ms_rcnn import analysis as A

SIZE = 20


def square(x0, y0, x1, y1):
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def rle(mask):
    return mask_utils.encode(np.asfortranarray(mask))


def gt_coco(instances):
    """COCO ground truth from {image_id: [(category_id, mask), ...]}."""
    images, anns = [], []
    for image_id, objs in instances.items():
        images.append(dict(id=image_id, width=SIZE, height=SIZE, file_name=f'{image_id}.png'))
        for category_id, mask in objs:
            r = rle(mask)
            r['counts'] = r['counts'].decode()
            x, y, w, h = mask_utils.toBbox(r).tolist()
            anns.append(dict(id=len(anns) + 1, image_id=image_id, category_id=category_id,
                             segmentation=r, area=float(mask.sum()), bbox=[x, y, w, h],
                             iscrowd=0))
    coco = COCO()
    coco.dataset = dict(images=images, annotations=anns,
                        categories=[dict(id=1, name='a'), dict(id=2, name='b')])
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


GT = square(0, 0, 10, 10)  # 100 px
HALF_OFF = square(0, 0, 10, 5)  # IoU 0.5 with GT


def test_true_iou_is_the_best_instance_of_the_same_class():
    gts = [rle(GT), rle(square(10, 10, 20, 20))]
    dets = [rle(square(0, 0, 10, 8)),    # 0.8 with GT 0 (class 1)
            rle(square(10, 10, 20, 15)),  # 0.5 with GT 1 (class 2)
            rle(square(10, 10, 20, 20))]  # 1.0 with GT 1, but predicted as class 1
    ious = A.best_iou_of_class(dets, [1, 2, 1], gts, [1, 2])
    assert ious.tolist() == pytest.approx([0.8, 0.5, 0.0])
    assert A.best_iou_of_class(dets, [1, 1, 1], [], []).tolist() == [0, 0, 0]
    assert A.best_iou_of_class([], [], gts, [1, 2]).shape == (0, )


def test_correlations_by_hand():
    truth = np.array([0.1, 0.4, 0.5, 0.9])
    linear = A.correlations(2 * truth + 1, truth)
    assert linear['pearson'] == pytest.approx(1.0) and linear['spearman'] == pytest.approx(1.0)
    monotone = A.correlations(truth**4, truth)
    assert monotone['spearman'] == pytest.approx(1.0) and monotone['pearson'] < 0.99
    reversed_ = A.correlations(-truth, truth)
    assert reversed_['spearman'] == pytest.approx(-1.0)
    # Pearson by hand for a small case: x = (1, 2, 3), y = (1, 3, 2): r = 0.5.
    assert A.correlations([1, 2, 3], [1, 3, 2])['pearson'] == pytest.approx(0.5)
    # two points always lie on a line: no correlation to report
    assert all(math.isnan(v) for v in A.correlations([0.1, 0.9], [0.2, 0.3]).values())
    assert math.isnan(A.correlations([1, 1, 1], [0.1, 0.2, 0.3])['pearson'])


def records_for(coco, dets):
    """dets: list of (image_id, category_id, mask, cls_score, predicted_iou)."""
    recs, rles = [], []
    for image_id in sorted({d[0] for d in dets}):
        mine = [d for d in dets if d[0] == image_id]
        det_rles = [rle(d[2]) for d in mine]
        cls = np.array([d[3] for d in mine])
        iou = np.array([d[4] for d in mine])
        recs.append(A.image_records(coco, image_id, det_rles, [d[1] for d in mine], cls,
                                    cls * iou, iou))
        rles += det_rles
    return A.concat_records(recs), rles


def test_three_rankings_by_hand():
    # One instance. A poor mask (IoU 0.52) has the higher classification score; a perfect mask
    # has the lower one but a higher predicted IoU.
    coco = gt_coco({1: [(1, GT)]})
    poor = square(0, 0, 10, 5)
    poor[5, 0:2] = 1  # 52 px, all inside the GT: IoU 0.52
    assert mask_utils.iou([rle(poor)], [rle(GT)], [0])[0][0] == pytest.approx(0.52)
    dets = [(1, 1, poor, 0.9, 0.5), (1, 1, GT.copy(), 0.5, 0.95)]
    records, rles = records_for(coco, dets)
    assert records['true_iou'].tolist() == pytest.approx([0.52, 1.0])
    report = A.summarize(coco, records, rles)
    # Ranked by classification score: at IoU 0.5 the poor mask is a true positive and the
    # perfect one a duplicate (AP 100); at 0.55 <= t <= 0.95 the poor one is a false positive
    # ranked first (precision 1/2 at full recall: AP 50). Mean over 10 thresholds: 55.
    assert report['segm_ap']['by_classification_score']['AP'] == pytest.approx(55.0)
    assert report['segm_ap']['by_classification_score']['AP50'] == pytest.approx(100.0)
    # Mask score 0.45 vs 0.475 and cls x true IoU 0.468 vs 0.5 both put the perfect mask first.
    assert report['segm_ap']['by_mask_score']['AP'] == pytest.approx(100.0)
    assert report['segm_ap']['by_classification_score_x_true_iou']['AP'] == pytest.approx(100.0)
    assert report['mask_iou_mae'] == pytest.approx((0.02 + 0.05) / 2)
    assert report['num_detections'] == 2 and report['has_mask_iou_head']


def test_plain_mask_rcnn_records_have_classification_rows_only(tmp_path):
    coco = gt_coco({1: [(1, GT)], 2: [(2, square(5, 5, 15, 15))]})
    dets = [rle(GT), rle(HALF_OFF)]
    rec = A.image_records(coco, 1, dets, [1, 1], np.array([0.9, 0.3]), np.array([0.9, 0.3]),
                          None)
    records = A.concat_records([rec])
    report = A.summarize(coco, records, dets)
    assert not report['has_mask_iou_head']
    assert set(report['correlation']) == {'classification_score'}
    assert set(report['segm_ap']) == {'by_classification_score',
                                      'by_classification_score_x_true_iou'}
    assert 'mask_iou_mae' not in report
    A.plot_report(records, str(tmp_path / 'fig.png'))
    assert (tmp_path / 'fig.png').stat().st_size > 1000


def test_empty_detections():
    coco = gt_coco({1: [(1, GT)]})
    report = A.summarize(coco, A.concat_records([]), [])
    assert report['num_detections'] == 0
    # COCO's AP of no detections on ground truth is 0 (a checkpoint that detects nothing)
    assert report['segm_ap']['by_classification_score'] == dict(AP=0.0, AP50=0.0, AP75=0.0)


def test_no_detections_and_no_ground_truth_is_not_an_ap():
    coco = gt_coco({1: []})
    report = A.summarize(coco, A.concat_records([]), [])
    assert math.isnan(report['segm_ap']['by_classification_score']['AP'])


def test_detections_without_ground_truth_are_not_an_ap():
    coco = gt_coco({1: []})
    records, rles = records_for(coco, [(1, 1, GT.copy(), 0.9, 0.8)])
    report = A.summarize(coco, records, rles)
    for ranking in report['segm_ap'].values():
        assert all(math.isnan(v) for v in ranking.values())  # not COCOeval's -1 x 100


def test_a_nan_predicted_iou_is_refused_not_taken_for_a_missing_head():
    coco = gt_coco({1: [(1, GT)]})
    records, rles = records_for(coco, [(1, 1, GT.copy(), 0.9, 0.8),
                                       (1, 1, HALF_OFF.copy(), 0.5, float('nan'))])
    with pytest.raises(ValueError, match='predicted NaN for 1 of 2 detections'):
        A.summarize(coco, records, rles)


def test_a_head_that_predicts_nan_everywhere_is_refused_when_the_model_has_one(tmp_path):
    """All NaN looks like a model without a head; the caller who knows says otherwise."""
    coco = gt_coco({1: [(1, GT)]})
    records, rles = records_for(coco, [(1, 1, GT.copy(), 0.9, float('nan')),
                                       (1, 1, HALF_OFF.copy(), 0.5, float('nan'))])
    with pytest.raises(ValueError, match='predicted NaN for 2 of 2 detections'):
        A.summarize(coco, records, rles, has_mask_iou_head=True)
    assert not A.summarize(coco, records, rles)['has_mask_iou_head']  # inferred: no head


def test_a_model_with_a_head_and_no_detection_keeps_its_rows(tmp_path):
    coco = gt_coco({1: [(1, GT)]})
    report = A.summarize(coco, A.concat_records([]), [], has_mask_iou_head=True)
    assert report['has_mask_iou_head'] and report['num_detections'] == 0
    assert report['segm_ap']['by_mask_score'] == dict(AP=0.0, AP50=0.0, AP75=0.0)
    assert math.isnan(report['mask_iou_mae'])
    assert math.isnan(report['correlation']['predicted_mask_iou']['pearson'])
    A.plot_report(A.concat_records([]), str(tmp_path / 'fig.png'), has_mask_iou_head=True)
    assert (tmp_path / 'fig.png').stat().st_size > 1000


def test_ap_averages_over_the_given_categories_only():
    """A model of class 1 only, on a file that also has class 2: the metric's AP is over the
    dataset's classes, so the analysis' is too when it is given them."""
    coco = gt_coco({1: [(1, GT), (2, square(10, 10, 20, 20))]})
    records, rles = records_for(coco, [(1, 1, GT.copy(), 0.9, 0.9)])
    everything = A.summarize(coco, records, rles)
    mine = A.summarize(coco, records, rles, cat_ids=[1])
    assert everything['segm_ap']['by_mask_score']['AP'] == pytest.approx(50.0)
    assert mine['segm_ap']['by_mask_score']['AP'] == pytest.approx(100.0)
    assert A.segm_ap(coco, A.concat_records([]), [], np.zeros(0), cat_ids=[1])['AP'] == 0.0


def test_string_image_ids_are_kept_as_they_are():
    """COCO files may use string ids (the dataset checks accept them)."""
    coco = gt_coco({'img_a': [(1, GT)], 'img_b': [(2, GT)]})
    records, rles = records_for(coco, [('img_a', 1, GT.copy(), 0.9, 0.9),
                                       ('img_b', 2, HALF_OFF.copy(), 0.8, 0.5)])
    assert records['image_id'].tolist() == ['img_a', 'img_b']
    assert records['category_id'].dtype == np.int64
    report = A.summarize(coco, records, rles)
    # Class 1: perfect (AP 100); class 2: IoU 0.5 (a hit at 0.5 only: AP 10).
    assert report['segm_ap']['by_mask_score']['AP'] == pytest.approx(55.0)
    assert report['segm_ap']['by_mask_score']['AP50'] == pytest.approx(100.0)


def test_reports_are_written_as_strict_json(tmp_path):
    import json
    from ms_rcnn.utils.json_report import write_json
    report = dict(ap=dict(AP=float('nan'), AP50=np.float32(50.5)), counts=np.array([1, 2]),
                  pair=(float('inf'), -float('inf')), name='x', ok=True, none=None,
                  per_category={np.int64(7): 1.5})
    path = tmp_path / 'out' / 'report.json'
    write_json(str(path), report)
    text = path.read_text()
    assert 'NaN' not in text and 'Infinity' not in text
    assert json.loads(text, parse_constant=lambda token: pytest.fail(token)) == dict(
        ap=dict(AP=None, AP50=50.5), counts=[1, 2], pair=[None, None], name='x', ok=True,
        none=None, per_category={'7': 1.5})
    assert [p.name for p in path.parent.iterdir()] == ['report.json']  # no temporary file left


def test_calibration_curve_by_hand():
    predicted = np.array([0.05, 0.08, 0.55, 0.95, 1.0])
    truth = np.array([0.1, 0.3, 0.5, 1.0, 0.8])
    curve = A.calibration_curve(predicted, truth, bins=10)
    assert curve['predicted'] == pytest.approx([0.065, 0.55, 0.975])  # 1.0 in the last bin
    assert curve['true'] == pytest.approx([0.2, 0.5, 0.9])
    assert curve['count'] == [2, 1, 2]


def test_detections_that_all_miss_have_an_ap_of_zero_not_nan():
    coco = gt_coco({1: [(1, GT)]})
    records, rles = records_for(coco, [(1, 1, square(40, 40, 50, 50), 0.9, 0.8)])
    report = A.summarize(coco, records, rles)
    assert report['segm_ap']['by_classification_score']['AP'] == 0.0


def test_format_report_lists_every_row():
    coco = gt_coco({1: [(1, GT)]})
    records, rles = records_for(coco, [(1, 1, GT.copy(), 0.9, 0.9)])
    text = A.format_report(A.summarize(coco, records, rles))
    for name in ('classification_score', 'predicted_mask_iou', 'mask_score', 'by_mask_score',
                 'MaskIoU mean absolute error'):
        assert name in text


def test_format_report_puts_each_value_in_its_column():
    """Every number distinct, so a swapped column or row shows."""
    report = dict(
        num_detections=12,
        correlation=dict(classification_score=dict(pearson=0.111, spearman=0.222),
                         mask_score=dict(pearson=-0.333, spearman=0.444)),
        mask_iou_mae=0.0555,
        matched=dict(min_box_iou=0.5, num_detections=7,
                     correlation=dict(mask_score=dict(pearson=0.666, spearman=0.777)),
                     mask_iou_mae=0.0888),
        segm_ap=dict(by_mask_score=dict(AP=12.345, AP50=67.891, AP75=0.5)))
    assert A.format_report(report).splitlines() == [
        'detections: 12',
        'correlation with the true IoU:',
        '  classification_score   Pearson   0.111  Spearman   0.222',
        '  mask_score             Pearson  -0.333  Spearman   0.444',
        'MaskIoU mean absolute error: 0.056',
        'matched detections (box IoU >= 0.5): 7',
        '  mask_score             Pearson   0.666  Spearman   0.777',
        '  MaskIoU mean absolute error: 0.089',
        'segm AP with masks ranked',
        '  by_mask_score                        AP  12.35  AP50  67.89  AP75   0.50',
    ]


def test_best_box_ious_by_class():
    from ms_rcnn.analysis import best_box_ious
    det = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    gt = np.array([[0, 0, 10, 20], [0, 0, 10, 10]], float)  # xywh
    ious = best_box_ious(det, [1, 2, 1], gt, [1, 2])
    np.testing.assert_allclose(ious, [0.5, 1.0, 0.0])
    # detections are (x1, y1, x2, y2), ground truth (x, y, w, h): away from the origin too
    np.testing.assert_allclose(best_box_ious(np.array([[5., 5., 15., 15.]]), [1],
                                             np.array([[5., 5., 10., 10.]]), [1]), [1.0])
    assert best_box_ious(np.zeros((0, 4)), [], gt, [1, 2]).shape == (0, )
    np.testing.assert_allclose(best_box_ious(det, [1, 1, 1], np.zeros((0, 4)), []), 0.0)


def test_matched_summary_keeps_only_detections_the_head_was_trained_on():
    from ms_rcnn.analysis import matched_summary
    records = dict(bbox_score=np.array([0.9, 0.8, 0.7, 0.6, 0.95]),
                   mask_iou=np.array([0.9, 0.5, 0.7, 0.2, 0.8]),
                   mask_score=np.array([0.81, 0.4, 0.49, 0.12, 0.76]),
                   true_iou=np.array([0.85, 0.55, 0.6, 0.3, 0.0]),
                   box_iou=np.array([0.9, 0.6, 0.7, 0.5, 0.1]))
    out = matched_summary(records)
    assert out['num_detections'] == 4
    np.testing.assert_allclose(out['mask_iou_mae'], (0.05 + 0.05 + 0.1 + 0.1) / 4)
    assert out['correlation']['predicted_mask_iou']['spearman'] == pytest.approx(1.0)
    assert out['correlation']['classification_score']['spearman'] == pytest.approx(0.8)


def _target_check_tool():
    import importlib.util
    import os.path as osp

    from ms_rcnn.testing import REPO_ROOT
    path = osp.join(REPO_ROOT, 'tools', 'analysis_tools', 'mask_iou_target_check.py')
    spec = importlib.util.spec_from_file_location('mask_iou_target_check', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pasted_ious_by_hand():
    import torch
    tool = _target_check_tool()
    gt = np.zeros((2, 40, 60), np.uint8)
    gt[0, 10:30, 10:30] = 1   # 400 px
    gt[1, 0:10, 40:60] = 1    # 200 px
    boxes = torch.tensor([[10., 10., 30., 30.], [20., 10., 40., 30.], [40., 0., 60., 10.]])
    logits = torch.full((3, 28, 28), 10.0)  # everything foreground: the pasted box itself
    ious = tool.pasted_ious(logits, boxes, gt, torch.tensor([0, 0, 1]), 0.0)
    np.testing.assert_allclose(ious, [1.0, 200 / 600, 1.0], atol=1e-6)
    empty = tool.pasted_ious(-logits, boxes, gt, torch.tensor([0, 0, 1]), 0.0)
    np.testing.assert_allclose(empty, 0.0)
    out = tool.agreement(np.array([0.1, 0.5, 0.9]), np.array([0.2, 0.5, 0.7]))
    assert out['num_rois'] == 3
    assert out['mean_abs_diff'] == pytest.approx(0.1)
    assert out['mean_signed_diff'] == pytest.approx(0.1 / 3)
    assert out['pearson'] > 0.9


class StubDetector:
    """Stands in for a trained detector: predicts each ground-truth mask of the image (class
    and mask exact), plus, where the image lacks a class, one detection of that class."""

    def __init__(self, coco, cat_ids, with_mask_iou=True):
        self.coco, self.cat_ids, self.with_mask_iou = coco, list(cat_ids), with_mask_iou
        self.expected = []  # (image_id, category_id, bbox_score, mask_iou, true_iou)

    def test_step(self, data):
        import torch
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        samples = []
        for meta in data['data_samples']:
            anns = self.coco.loadAnns(self.coco.getAnnIds(imgIds=[meta.img_id]))
            masks = [self.coco.annToMask(a) for a in anns]
            cats = [a['category_id'] for a in anns]
            for cat in self.cat_ids:
                if cat not in cats:  # a false positive: no instance of its class here
                    masks.append(masks[0])
                    cats.append(cat)
            num = len(masks)
            bbox_scores = torch.linspace(0.9, 0.5, num)
            mask_ious = torch.linspace(0.2, 0.8, num)
            pred = InstanceData(
                masks=torch.from_numpy(np.stack(masks)).bool(),
                labels=torch.tensor([self.cat_ids.index(c) for c in cats]),
                bboxes=torch.zeros(num, 4))
            if self.with_mask_iou:
                pred.bbox_scores, pred.mask_ious = bbox_scores, mask_ious
                pred.scores = bbox_scores * mask_ious
            else:
                pred.scores = bbox_scores
            for i, cat in enumerate(cats):
                self.expected.append((meta.img_id, cat, float(bbox_scores[i]),
                                      float(mask_ious[i]), 1.0 if i < len(anns) else 0.0))
            sample = DetDataSample(metainfo=meta.metainfo)
            sample.pred_instances = pred
            samples.append(sample)
        return samples


@pytest.mark.parametrize('with_mask_iou', [True, False])
def test_predict_records_maps_labels_scores_and_true_iou(toy_root, tmp_path, monkeypatch,
                                                         with_mask_iou):
    """Labels become the file's category ids (here non-contiguous, 7 and 3), the classification
    and mask scores land in their fields, and the true IoU is computed against the image's GT."""
    import json
    import os.path as osp

    from ms_rcnn import apis
    from ms_rcnn.testing import make_toy_coco
    from ms_rcnn.utils.config import load_config

    from .conftest import TOY_CONFIG
    root = str(tmp_path)
    val = make_toy_coco(root, splits=('val', ))['val']
    with open(val) as f:
        data = json.load(f)
    new_id = {1: 7, 2: 3}  # 'disc' -> 7, 'star' -> 3, the file's category order kept
    for cat in data['categories']:
        cat['id'] = new_id[cat['id']]
    for ann in data['annotations']:
        ann['category_id'] = new_id[ann['category_id']]
    with open(val, 'w') as f:
        json.dump(data, f)
    cfg = load_config(TOY_CONFIG, data_root=root)
    coco = COCO(val)
    stub = StubDetector(coco, [7, 3], with_mask_iou)
    monkeypatch.setattr(apis, 'init_detector', lambda cfg, ckpt, device: stub)
    monkeypatch.setattr(apis, 'check_checkpoint_fits', lambda *args: None)

    predictions = apis.predict_records(cfg, 'unused.pth', progress=False)
    records, rles, kept = predictions.records, predictions.rles, predictions.samples
    assert predictions.cat_ids == [7, 3] and predictions.has_mask_iou_head == with_mask_iou

    got = list(zip(records['image_id'].tolist(), records['category_id'].tolist(),
                   records['bbox_score'].tolist(), records['mask_iou'].tolist(),
                   records['true_iou'].tolist()))
    assert len(got) == len(stub.expected) == len(rles) > len(data['annotations'])
    for row, want in zip(got, stub.expected):
        image_id, cat, bbox_score, mask_iou, true_iou = want
        assert row[:2] == (image_id, cat)
        assert row[2] == pytest.approx(bbox_score)
        if with_mask_iou:
            assert row[3] == pytest.approx(mask_iou)
        else:
            assert math.isnan(row[3])
        assert row[4] == pytest.approx(true_iou)
    mask_score = records['bbox_score'] * (records['mask_iou'] if with_mask_iou else 1.0)
    np.testing.assert_allclose(records['mask_score'], mask_score, rtol=1e-6)
    assert [s.img_id for s in kept] == [1, 2, 3, 4]
    assert osp.basename(cfg.test_dataloader.dataset.ann_file) == 'instances_val.json'
