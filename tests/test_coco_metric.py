"""ms_rcnn.MaskScoringCocoMetric: its annotation check and its two score columns."""
import json

import numpy as np
import pytest
import torch

from ms_rcnn.evaluation import MaskScoringCocoMetric
from ms_rcnn.evaluation.coco_metric import unusable_fields


def write_coco(path, drop=None, change=None):
    """Two images, three annotations; ``drop`` = (annotation index, field) to remove,
    ``change`` = (annotation index, field, value) to set."""
    square = [[2.0, 2.0, 10.0, 2.0, 10.0, 10.0, 2.0, 10.0]]
    anns = [dict(id=i + 1, image_id=1 + i % 2, category_id=1, bbox=[2.0, 2.0, 8.0, 8.0],
                 area=64.0, iscrowd=0, segmentation=square) for i in range(3)]
    if drop is not None:
        del anns[drop[0]][drop[1]]
    if change is not None:
        anns[change[0]][change[1]] = change[2]
    coco = dict(images=[dict(id=i, file_name=f'{i}.jpg', height=16, width=16) for i in (1, 2)],
                annotations=anns, categories=[dict(id=1, name='balloon')])
    path.write_text(json.dumps(coco))
    return str(path)


def test_a_complete_file_builds_through_the_registry(tmp_path):
    from mmdet.registry import METRICS
    metric = METRICS.build(dict(type='ms_rcnn.MaskScoringCocoMetric', metric=['bbox', 'segm'],
                                ann_file=write_coco(tmp_path / 'val.json')))
    assert isinstance(metric, MaskScoringCocoMetric) and len(metric._coco_api.anns) == 3


@pytest.mark.parametrize('field', ['area', 'iscrowd', 'bbox', 'segmentation'])
def test_annotations_lacking_a_field_are_refused_with_file_and_ids(tmp_path, field):
    path = write_coco(tmp_path / 'instances_val.json', drop=(1, field))
    with pytest.raises(ValueError) as info:
        MaskScoringCocoMetric(ann_file=path, metric=['bbox', 'segm'])
    message = str(info.value)
    assert message.startswith(f'{path}: COCO evaluation needs a usable')
    assert f"1 without a usable '{field}' (ids 2)" in message


@pytest.mark.parametrize('field, value', [
    ('segmentation', []),                    # pycocotools: IndexError after the run
    ('segmentation', {}),
    ('segmentation', [[2.0, 2.0, 10.0, 2.0]]),  # four numbers: read as a box, TypeError
    ('segmentation', [2.0, 2.0, 10.0, 2.0, 10.0, 10.0]),  # not a list of polygons
    ('segmentation', {'size': [16, 16]}),    # an RLE without counts
    ('area', float('nan')),                  # no error, but counted in every area range
    ('area', float('inf')),
    ('bbox', [2.0, 2.0, 8.0]),
    ('bbox', [2.0, 2.0, 8.0, float('nan')]),
])
def test_annotations_coco_eval_cannot_use_are_refused_with_file_and_ids(tmp_path, field, value):
    path = write_coco(tmp_path / 'instances_val.json', change=(2, field, value))
    with pytest.raises(ValueError) as info:
        MaskScoringCocoMetric(ann_file=path, metric=['bbox', 'segm'])
    assert f"1 without a usable '{field}' (ids 3)" in str(info.value)


def test_annotations_of_images_outside_the_file_are_not_checked(tmp_path):
    """COCOeval never reads them, so a bad field there must not refuse the file."""
    path = write_coco(tmp_path / 'val.json', change=(2, 'segmentation', []))
    coco = json.loads((tmp_path / 'val.json').read_text())
    coco['annotations'][2]['image_id'] = 99
    (tmp_path / 'val.json').write_text(json.dumps(coco))
    MaskScoringCocoMetric(ann_file=path, metric=['bbox', 'segm'])


def test_what_the_check_refuses_pycocotools_cannot_evaluate(tmp_path):
    """The premise: COCOeval fails on such a segmentation after the whole run."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    path = write_coco(tmp_path / 'val.json', change=(2, 'segmentation', []))
    gt = COCO(path)
    mask = np.zeros((16, 16), np.uint8)
    mask[2:10, 2:10] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    dt = gt.loadRes([dict(image_id=1, category_id=1, segmentation=rle, score=0.9)])
    with pytest.raises(IndexError):
        COCOeval(gt, dt, 'segm').evaluate()
    MaskScoringCocoMetric(ann_file=write_coco(tmp_path / 'ok.json'), metric=['bbox', 'segm'])


def test_format_only_and_mask_only_evaluation_need_less(tmp_path):
    path = write_coco(tmp_path / 'no_area.json', drop=(0, 'area'))
    MaskScoringCocoMetric(ann_file=path, metric='bbox', format_only=True,
                          outfile_prefix=str(tmp_path / 'out'))
    path = write_coco(tmp_path / 'no_bbox.json', drop=(0, 'bbox'))
    MaskScoringCocoMetric(ann_file=path, metric='segm')
    with pytest.raises(ValueError, match="without a usable 'bbox'"):
        MaskScoringCocoMetric(path, metric='bbox')  # ann_file given by position


def test_box_only_evaluation_does_not_need_segmentations(tmp_path):
    path = write_coco(tmp_path / 'boxes.json', drop=(0, 'segmentation'))
    metric = MaskScoringCocoMetric(ann_file=path, metric='bbox')
    assert len(metric._coco_api.anns) == 3
    with pytest.raises(ValueError, match="without a usable 'segmentation'"):
        MaskScoringCocoMetric(ann_file=path, metric='segm')


def test_area_must_be_a_finite_number():
    anns = [dict(id=1, area=3.5), dict(id=2, area='12'), dict(id=3, area=True), dict(id=4),
            dict(id=5, area=float('nan')), dict(id=6, area=7)]
    assert unusable_fields(anns, ['area']) == {'area': [2, 3, 4, 5]}
    assert unusable_fields(anns[:1], ['area']) == {}


def test_a_label_outside_the_dataset_classes_is_named(tmp_path):
    metric = MaskScoringCocoMetric(ann_file=write_coco(tmp_path / 'val.json'), metric='bbox')
    metric.dataset_meta = dict(classes=('balloon', ))
    # the largest label, wherever it is; one past the last class is already outside
    for labels, bad in (([2, 0], 2), ([1, 0], 1)):
        sample = dict(img_id=1, ori_shape=(16, 16), pred_instances=dict(
            bboxes=torch.tensor([[2.0, 2.0, 10.0, 10.0]] * 2), labels=torch.tensor(labels),
            scores=torch.tensor([0.3, 0.6])))
        with pytest.raises(ValueError, match=rf"class index {bad}, but the dataset has 1 "
                                             r"classes \('balloon',\): set num_classes"):
            metric.process({}, [sample])


def test_boxes_keep_the_classification_score_and_masks_the_mask_score(tmp_path):
    metric = MaskScoringCocoMetric(ann_file=write_coco(tmp_path / 'val.json'),
                                   metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=('balloon', ))
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[:, 2:10, 2:10] = True
    sample = dict(img_id=1, ori_shape=(16, 16), pred_instances=dict(
        bboxes=torch.tensor([[2.0, 2.0, 10.0, 10.0]] * 2), labels=torch.tensor([0, 0]),
        scores=torch.tensor([0.3, 0.6]), bbox_scores=torch.tensor([0.9, 0.8]), masks=masks))
    metric.process({}, [sample])
    _, result = metric.results[0]
    np.testing.assert_allclose(result['scores'], [0.9, 0.8])
    np.testing.assert_allclose(result['mask_scores'], [0.3, 0.6])


@pytest.mark.parametrize('classes', [('balloon', 'ballon'), ('ballon', 'balloon')])
def test_a_class_missing_from_the_file_is_named_whatever_the_label(tmp_path, classes):
    """mmdet maps labels to the file's categories named in ``classes``: a misspelt class
    shifts the ones after it (results under other categories) or fails in results2json."""
    path = write_coco(tmp_path / 'val.json')
    metric = MaskScoringCocoMetric(ann_file=path, metric='bbox')
    metric.dataset_meta = dict(classes=classes)
    sample = dict(img_id=1, ori_shape=(16, 16), pred_instances=dict(
        bboxes=torch.tensor([[2.0, 2.0, 10.0, 10.0]] * 2), labels=torch.tensor([0, 0]),
        scores=torch.tensor([0.3, 0.6])))
    with pytest.raises(ValueError) as info:
        metric.process({}, [sample])
    assert str(info.value).startswith(
        f"{path}: the dataset's classes 'ballon' are no categories of this file (it has "
        "['balloon'])")
    metric.dataset_meta = dict(classes=('balloon', ))
    metric.process({}, [sample])  # the right name: stored as usual
    assert len(metric.results) == 1  # only the accepted batch


def sample_of(img_id, img_path=None):
    sample = dict(img_id=img_id, ori_shape=(16, 16), pred_instances=dict(
        bboxes=torch.tensor([[2.0, 2.0, 10.0, 10.0]]), labels=torch.tensor([0]),
        scores=torch.tensor([0.6]), bbox_scores=torch.tensor([0.9])))
    if img_path is not None:
        sample['img_path'] = img_path
    return sample


def balloon_metric(path):
    """A box metric on ``path`` for a dataset of the class 'balloon'."""
    metric = MaskScoringCocoMetric(ann_file=path, metric='bbox')
    metric.dataset_meta = dict(classes=('balloon', ))
    return metric


def test_an_image_the_evaluator_file_lacks_stops_at_the_first_batch(tmp_path):
    """An evaluator left on another dataset's file: pycocotools would fail after the run."""
    path = write_coco(tmp_path / 'other.json')
    metric = balloon_metric(path)
    with pytest.raises(ValueError, match=rf"{path}: no image has id 7, the dataset's image "
                                         r"data/mine/x\.jpg: the evaluator's ann_file must be"):
        metric.process({}, [sample_of(7, 'data/mine/x.jpg')])
    assert metric.results == []


def test_an_image_of_the_same_id_but_another_file_stops(tmp_path):
    """Overlapping ids: mmdet would report the AP of the file's images, silently."""
    path = write_coco(tmp_path / 'other.json')
    metric = balloon_metric(path)
    with pytest.raises(ValueError, match=rf"{path}: image id 1 is '1.jpg' there but "
                                         r"data/mine/img_1\.jpg in the dataset"):
        metric.process({}, [sample_of(1, 'data/mine/img_1.jpg')])
    metric.process({}, [sample_of(1, 'data/mine/1.jpg'), sample_of(2)])  # same file; no path
    metric.process({}, [sample_of(1, 'data/coco/train/../val/1.jpg')])  # other directories
    assert len(metric.results) == 3


def test_results_covering_part_of_the_file_warn(tmp_path, monkeypatch):
    from ms_rcnn.evaluation import coco_metric
    messages = []
    monkeypatch.setattr(coco_metric, 'print_log', lambda msg, **kw: messages.append(msg))
    path = write_coco(tmp_path / 'val.json')
    metric = balloon_metric(path)
    metric.process({}, [sample_of(1, 'imgs/1.jpg')])
    metric.compute_metrics(metric.results)
    assert any(m.startswith(f'{path}: the results cover 1 of its 2 images; COCO AP counts '
                            'the ground truth of the other 1 as missed') for m in messages)
    messages.clear()
    metric.results.clear()
    metric.process({}, [sample_of(1), sample_of(2)])
    metric.compute_metrics(metric.results)
    assert not any('the results cover' in m for m in messages)
