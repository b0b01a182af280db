"""The in-training bad-data policy: clean_coco, CheckedCocoDataset and CheckFiniteLossHook."""
import copy
import json
import math
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch

import ms_rcnn  # noqa: F401
from ms_rcnn.datasets import (POLICY, SEVERITY, BadDatasetError, BadImageError,
                              CheckedCocoDataset, clean_coco)
from ms_rcnn.datasets import checked_coco
from ms_rcnn.datasets.bad_data_policy import clip_bbox, usable_polygon
from ms_rcnn.engine import CheckFiniteLossHook, NonFiniteLossError
from ms_rcnn.testing import make_toy_coco

SQUARE = [10.0, 10.0, 30.0, 10.0, 30.0, 30.0, 10.0, 30.0]


def ann(ann_id, **fields):
    base = dict(id=ann_id, image_id=1, category_id=1, segmentation=[list(SQUARE)],
                area=400.0, bbox=[10.0, 10.0, 20.0, 20.0], iscrowd=0)
    base.update(fields)
    return base


def without(annotation, key):
    del annotation[key]
    return annotation


def coco(*anns, images=None):
    return dict(images=images or [dict(id=1, file_name='a.png', height=40, width=60)],
                annotations=list(anns), categories=[dict(id=1, name='thing')])


def test_every_problem_kind_has_an_action():
    assert set(POLICY) == set(SEVERITY)


def test_usable_polygon_and_clip_bbox():
    assert usable_polygon(SQUARE)
    assert not usable_polygon([1.0, 2.0, 3.0, 4.0])
    assert not usable_polygon(SQUARE[:-1])
    assert not usable_polygon(SQUARE[:-2] + [float('nan'), 1.0])
    assert clip_bbox([-5, 2, 20, 50], height=40, width=60) == [0.0, 2, 15, 38]
    assert clip_bbox([70, 2, 5, 5], height=40, width=60) == [60, 2, 0.0, 5]


def test_clean_coco_drops_repairs_and_keeps_each_case():
    data = coco(
        ann(1),                                                       # clean
        ann(2, segmentation=[[1.0, 2.0, 3.0, 4.0]]),                  # only a 2-point polygon
        ann(3, segmentation=[list(SQUARE), [1.0, 2.0, 3.0, 4.0]]),    # one bad part of two
        ann(4, bbox=[50.0, 10.0, 30.0, 20.0]),                        # box past the right side
        ann(5, category_id=7),                                        # unknown category
        ann(6, bbox=[10.0, float('nan'), 20.0, 20.0]),                # NaN coordinate
        ann(7, segmentation=[[5.0, 5.0, 6.0, 6.0, 7.0, 7.0]]),        # zero-area polygon
        ann(8, area=None),                                            # missing area
        ann(9, bbox=[10.0, 10.0, 0.0, 5.0]),                          # zero-width box
        ann(10, segmentation=[]),                                     # no mask
        ann(11, image_id=99),                                         # unknown image
        without(ann(12), 'iscrowd'),                                  # missing iscrowd
        ann(13, iscrowd='0'),                                         # truthy for mmdet
        without(ann(14, area=None, bbox=[50.0, 10.0, 30.0, 20.0]), 'iscrowd'),  # three repairs
    )
    before = copy.deepcopy(data)
    report = clean_coco(data)
    assert data == before  # the input is not modified
    assert report.stops == []
    kept = {a['id']: a for a in report.data['annotations']}
    assert sorted(kept) == [1, 3, 4, 8, 12, 14]
    assert kept[1] is data['annotations'][0]  # clean annotations pass through untouched
    assert kept[3]['segmentation'] == [SQUARE]
    assert kept[4]['bbox'] == [50.0, 10.0, 10.0, 20.0]
    assert kept[8]['area'] == 400.0
    assert kept[12] == dict(data['annotations'][11], iscrowd=0)
    assert kept[14]['bbox'] == [50.0, 10.0, 10.0, 20.0] and kept[14]['area'] == 200.0
    assert kept[14]['iscrowd'] == 0
    actions = {(p.ann_id, p.kind): action for p, action in report.actions}
    assert actions == {
        (2, 'polygon_too_few_points'): 'drop_instance',
        (3, 'polygon_too_few_points'): 'drop_parts',
        (4, 'bbox_out_of_bounds'): 'clip_box',
        (5, 'unknown_category_id'): 'drop_instance',
        (6, 'nonfinite_coordinates'): 'drop_instance',
        (7, 'mask_zero_area'): 'drop_instance',
        (8, 'area_invalid'): 'fill_area',
        (9, 'bbox_nonpositive_size'): 'drop_instance',
        (10, 'segmentation_missing'): 'drop_instance',
        (11, 'unknown_image_id'): 'drop_instance',
        (12, 'iscrowd_invalid'): 'fill_iscrowd',
        (13, 'iscrowd_invalid'): 'drop_instance',
        (14, 'bbox_out_of_bounds'): 'clip_box',  # each problem named with its own repair
        (14, 'area_invalid'): 'fill_area',
        (14, 'iscrowd_invalid'): 'fill_iscrowd',
    }
    named = [p for p, _ in report.actions if p.ann_id == 4][0]
    assert named.image == 'a.png'


def test_clean_coco_stops_on_what_cannot_be_trained():
    images = [dict(id=1, file_name='a.png', height=40, width=60),
              dict(id=1, file_name='b.png', height=40, width=60),
              dict(id=2, file_name='c.png', width=60)]
    report = clean_coco(coco(ann(1), ann(1), images=images))
    kinds = sorted(p.kind for p in report.stops)
    assert kinds == ['duplicate_annotation_id', 'duplicate_image_id', 'invalid_image_entry']
    assert clean_coco(dict(images=[])).stops[0].kind == 'invalid_structure'


def test_clean_coco_finds_missing_image_files(tmp_path):
    cv2.imwrite(str(tmp_path / 'a.png'), np.zeros((40, 60, 3), np.uint8))
    images = [dict(id=1, file_name='a.png', height=40, width=60),
              dict(id=2, file_name='gone.png', height=40, width=60)]
    report = clean_coco(coco(ann(1), images=images), img_dir=str(tmp_path))
    assert [(p.kind, p.image) for p in report.stops] == [('image_missing', 'gone.png')]
    assert str(tmp_path / 'gone.png') in report.stops[0].message


# ----------------------------------------------------------------------------- the dataset

PIPELINE = [dict(type='LoadImageFromFile'),
            dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
            dict(type='PackDetInputs')]


@pytest.fixture()
def toy(tmp_path):
    from mmengine.registry import DefaultScope
    make_toy_coco(str(tmp_path), splits=('train', ))
    with DefaultScope.overwrite_default_scope('mmdet'):
        yield str(tmp_path)


def dataset_kwargs(root, ann_file='annotations/instances_train.json', **extra):
    return dict(data_root=root, ann_file=ann_file, data_prefix=dict(img='images/train/'),
                pipeline=copy.deepcopy(PIPELINE), metainfo=dict(classes=('disc', 'star')),
                filter_cfg=dict(filter_empty_gt=True), **extra)


def infos(dataset):
    """Every sample's data info (``data_list`` itself is emptied by serialisation)."""
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def rewrite(root, edit, name='bad.json'):
    with open(osp.join(root, 'annotations', 'instances_train.json')) as f:
        data = json.load(f)
    edit(data)
    with open(osp.join(root, 'annotations', name), 'w') as f:
        json.dump(data, f)
    return f'annotations/{name}'


def test_clean_data_loads_exactly_as_mmdet(toy):
    from mmdet.datasets import CocoDataset
    ours = CheckedCocoDataset(**dataset_kwargs(toy))
    theirs = CocoDataset(**dataset_kwargs(toy))
    assert len(ours) == len(theirs) == 4
    assert infos(ours) == infos(theirs)
    assert sum(len(i['instances']) for i in infos(ours)) == 9
    assert ours.clean_report.actions == [] and ours.clean_report.stops == []
    assert isinstance(ours.pipeline.transforms[0], checked_coco.CheckedImageLoading)


def test_bad_annotations_are_dropped_with_a_warning_naming_them(toy, monkeypatch):
    messages = []
    monkeypatch.setattr(checked_coco, 'print_log', lambda msg, **kw: messages.append(msg))

    def edit(data):
        data['annotations'][0]['segmentation'] = [[1, 2, 3, 4]]
        data['annotations'][1]['category_id'] = 9

    ann_file = rewrite(toy, edit)
    with open(osp.join(toy, ann_file)) as f:
        anns = json.load(f)['annotations']
    first, second = anns[0], anns[1]
    dataset = CheckedCocoDataset(**dataset_kwargs(toy, ann_file))
    total = sum(len(info['instances']) for info in infos(dataset))
    assert total == len(anns) - 2
    text = '\n'.join(messages)
    assert f'annotation {first["id"]}' in text and f'annotation {second["id"]}' in text
    assert 'train_0001.png' in text and 'polygon_too_few_points' in text
    assert 'unknown_category_id' in text and 'instances dropped' in text
    sample = dataset[0]  # training still gets the image, without the dropped instances
    assert len(sample['data_samples'].gt_instances) == len(dataset.get_data_info(0)['instances'])


def test_missing_image_stops_the_build_naming_the_file(toy):
    import os
    os.remove(osp.join(toy, 'images', 'train', 'train_0003.png'))
    with pytest.raises(BadDatasetError, match='train_0003.png'):
        CheckedCocoDataset(**dataset_kwargs(toy))
    # The same data loads when the file check is turned off (the image then fails to load).
    assert len(CheckedCocoDataset(**dataset_kwargs(toy, check_image_files=False))) == 4


def test_duplicate_annotation_ids_stop_the_build(toy):
    ann_file = rewrite(toy, lambda d: d['annotations'][1].update(id=d['annotations'][0]['id']))
    with pytest.raises(BadDatasetError, match='duplicate_annotation_id'):
        CheckedCocoDataset(**dataset_kwargs(toy, ann_file))


def break_images(root):
    """Image 1 is not an image; image 2 is stored rotated (HxW swapped)."""
    img_dir = osp.join(root, 'images', 'train')
    with open(osp.join(img_dir, 'train_0001.png'), 'wb') as f:
        f.write(b'not a png')
    img = cv2.imread(osp.join(img_dir, 'train_0002.png'))
    cv2.imwrite(osp.join(img_dir, 'train_0002.png'), np.ascontiguousarray(img.transpose(1, 0, 2)))


def test_unusable_images_are_skipped_in_training_once_each(toy, monkeypatch):
    messages = []
    monkeypatch.setattr(checked_coco, 'print_log', lambda msg, **kw: messages.append(msg))
    break_images(toy)
    dataset = CheckedCocoDataset(**dataset_kwargs(toy))
    assert dataset.prepare_data(0) is None
    assert dataset.prepare_data(1) is None
    assert dataset.prepare_data(0) is None
    assert len(messages) == 2
    assert 'train_0001.png' in messages[0] and 'cannot be read' in messages[0]
    assert 'train_0002.png' in messages[1] and '128x96 (HxW)' in messages[1]
    assert 'swapped' in messages[1]
    # mmengine's __getitem__ draws another index for a skipped one.
    sample = dataset[0]
    assert osp.basename(sample['data_samples'].img_path) in ('train_0003.png', 'train_0004.png')


def test_exif_rotated_image_names_the_fix_and_the_fix_works(toy):
    # A phone photo: stored 96 high x 128 wide, tagged "turn 90 degrees", annotated as stored.
    from PIL import Image
    path = osp.join(toy, 'images', 'train', 'train_0002.png')
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(path).convert('RGB').save(path, format='JPEG', exif=exif.tobytes())
    dataset = CheckedCocoDataset(**dataset_kwargs(toy, test_mode=True))
    with pytest.raises(BadImageError, match="128x96 .*color_ignore_orientation"):
        dataset[1]
    pipeline = copy.deepcopy(PIPELINE)
    pipeline[0]['color_type'] = 'color_ignore_orientation'
    fixed = CheckedCocoDataset(**dict(dataset_kwargs(toy, test_mode=True), pipeline=pipeline))
    assert fixed[1]['data_samples'].ori_shape == (96, 128)


def test_unusable_images_stop_evaluation(toy):
    break_images(toy)
    dataset = CheckedCocoDataset(**dataset_kwargs(toy, test_mode=True))
    with pytest.raises(BadImageError, match='train_0001.png: cannot be read'):
        dataset[0]
    with pytest.raises(BadImageError, match='train_0002.png: image is 128x96'):
        dataset[1]


@pytest.mark.parametrize('workers', [0, 1])
def test_an_unusable_image_is_one_line_from_a_dataloader_worker_too(toy, monkeypatch, workers):
    """torch re-raises a worker's BadImageError as a RuntimeError holding the worker's
    traceback (the class takes two arguments); the tools still print the one line."""
    from torch.utils.data import DataLoader

    from ms_rcnn.utils.cli import TRACEBACK_ENV, run_tool
    break_images(toy)
    dataset = CheckedCocoDataset(**dataset_kwargs(toy, test_mode=True))

    def main(argv):
        for _ in DataLoader(dataset, num_workers=workers, collate_fn=list):
            pass

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    with pytest.raises(SystemExit) as stop:
        run_tool(main)
    path = osp.join(toy, 'images', 'train', 'train_0001.png')
    where = ' (in DataLoader worker process 0)' if workers else ''
    assert re.fullmatch(rf'error: {re.escape(path)}: cannot be read \(.*\)\. Check the dataset '
                        rf'with tools/check_dataset\.py\.{re.escape(where)}', stop.value.code)
    monkeypatch.setenv(TRACEBACK_ENV, '1')
    with pytest.raises(RuntimeError if workers else BadImageError, match='train_0001.png'):
        run_tool(main)


def test_a_dataset_left_without_images_stops_when_it_is_built(toy):
    """mmengine would stop later with a bare 'need at least one array to concatenate'."""
    ann_file = osp.join(toy, 'annotations', 'instances_train.json')
    with open(ann_file) as f:
        data = json.load(f)
    with open(ann_file, 'w') as f:
        json.dump(dict(data, annotations=[]), f)
    with pytest.raises(BadDatasetError, match=re.escape(
            "filter_cfg {'filter_empty_gt': True} leaves out all 4 images (with "
            "filter_empty_gt, only images with an annotation of the classes ('disc', 'star') "
            "are kept)")):
        CheckedCocoDataset(**dataset_kwargs(toy))  # filter_empty_gt=True, as in training
    assert len(CheckedCocoDataset(**dataset_kwargs(toy, test_mode=True))) == 4
    with open(ann_file, 'w') as f:
        json.dump(dict(data, images=[], annotations=[]), f)
    with pytest.raises(BadDatasetError, match='instances_train.json: the file lists no images'):
        CheckedCocoDataset(**dataset_kwargs(toy, test_mode=True))


# ----------------------------------------------------------------------------- the loss hook

class _Runner:
    def __init__(self, optim_wrapper=None):
        from mmengine.logging import MMLogger
        self.iter = 41
        self.optim_wrapper = optim_wrapper
        self.logger = MMLogger.get_instance('test_bad_data_policy')


def _batch(*names):
    from mmdet.structures import DetDataSample
    return dict(data_samples=[DetDataSample(metainfo=dict(img_path=n)) for n in names])


def test_finite_loss_hook_stops_naming_the_step_terms_and_images():
    hook = CheckFiniteLossHook()
    runner = _Runner()
    good = dict(loss=torch.tensor(1.0), loss_cls=torch.tensor(0.5), acc=torch.tensor(90.0))
    hook.after_train_iter(runner, 0, _batch('a.jpg'), good)
    # only loss terms count: an accuracy of 0/0 (no sampled RoI) is no reason to stop
    hook.after_train_iter(runner, 0, _batch('a.jpg'), dict(good, acc=torch.tensor(math.nan)))
    bad = dict(loss=torch.tensor(math.nan), loss_cls=torch.tensor(0.5),
               loss_mask=torch.tensor(math.inf))
    with pytest.raises(NonFiniteLossError) as info:
        hook.after_train_iter(runner, 0, _batch('a.jpg', 'b.jpg'), bad)
    text = str(info.value)
    assert 'iteration 42' in text and 'loss, loss_mask' in text and 'loss_cls' not in text
    assert "'a.jpg', 'b.jpg'" in text


def test_finite_loss_hook_tolerates_skipped_amp_steps():
    from mmengine.optim import AmpOptimWrapper
    hook = CheckFiniteLossHook(amp_patience=2)
    runner = _Runner(object.__new__(AmpOptimWrapper))
    bad = dict(loss=torch.tensor(math.inf))
    hook.after_train_iter(runner, 0, _batch('a.jpg'), bad)
    hook.after_train_iter(runner, 0, _batch('a.jpg'), bad)
    hook.after_train_iter(runner, 0, _batch('a.jpg'), dict(loss=torch.tensor(1.0)))
    hook.after_train_iter(runner, 0, _batch('a.jpg'), bad)
    hook.after_train_iter(runner, 0, _batch('a.jpg'), bad)
    with pytest.raises(NonFiniteLossError):
        hook.after_train_iter(runner, 0, _batch('a.jpg'), bad)


def test_clean_coco_reports_bad_image_entries_instead_of_crashing(tmp_path):
    images = [dict(id=1, height=40, width=60), dict(id=2, file_name=5, height=40, width=60)]
    report = clean_coco(coco(ann(1), images=images), img_dir=str(tmp_path))
    assert sorted(p.kind for p in report.stops) == ['invalid_image_entry'] * 2


def test_a_box_clipped_below_one_pixel_is_dropped():
    report = clean_coco(coco(ann(1, bbox=[59.5, 1.0, 5.0, 5.0],
                                 segmentation=[[59.5, 1, 60, 1, 60, 6, 59.5, 6]], area=2.5)))
    assert report.data['annotations'] == []
    assert [action for _, action in report.actions] == ['drop_instance']
    # below one pixel high: the bottom edge of the 60x40 image
    report = clean_coco(coco(ann(1, bbox=[1.0, 39.5, 5.0, 5.0],
                                 segmentation=[[1, 39.5, 6, 39.5, 6, 40, 1, 40]], area=2.5)))
    assert report.data['annotations'] == []
    assert [action for _, action in report.actions] == ['drop_instance']


def test_dropping_an_instance_wins_over_repairing_it():
    """An unknown category and one bad polygon part: dropped, not kept with the part cut."""
    report = clean_coco(coco(ann(1, category_id=7, segmentation=[list(SQUARE), [1.0, 2.0]]),
                             ann(2, segmentation=[list(SQUARE), [1.0, 2.0]])))
    assert [a['id'] for a in report.data['annotations']] == [2]
    assert report.data['annotations'][0]['segmentation'] == [SQUARE]


def test_a_category_without_a_name_stops():
    data = coco(ann(1))
    data['categories'] = [dict(id=1)]
    assert [p.kind for p in clean_coco(data).stops] == ['invalid_category_entry']


def test_bad_image_error_survives_pickling():
    import pickle
    error = pickle.loads(pickle.dumps(BadImageError('a/b.png', 'cannot be read')))
    assert isinstance(error, BadImageError) and error.path == 'a/b.png'
    assert str(error).startswith('a/b.png: cannot be read.')


def test_dataset_keeps_no_raw_annotations_and_skips_remote_file_checks(toy):
    dataset = CheckedCocoDataset(**dataset_kwargs(toy))
    assert dataset.clean_report.data is None
    assert dataset._image_dir() == osp.join(toy, 'images/train/')
    dataset.backend_args = dict(backend='petrel', path_mapping={toy: 's3://bucket/'})
    assert dataset._image_dir() is None  # images are not local files: no stat


def test_a_class_the_file_lacks_stops_the_build_naming_it(toy):
    # mmdet would drop the class silently and shift the labels past the dataset's cat_ids
    kwargs = dataset_kwargs(toy)
    kwargs['metainfo'] = dict(classes=('disc', 'strar'))
    with pytest.raises(BadDatasetError, match=r"instances_train.json: metainfo classes "
                       r"\['strar'\] are not categories .*'disc', 'star'"):
        CheckedCocoDataset(**kwargs)


def test_classes_in_another_order_than_the_file_stop(toy, monkeypatch):
    # mmdet would label the file's first category 0 and name it classes[0] = 'star'
    kwargs = dataset_kwargs(toy)
    kwargs['metainfo'] = dict(classes=('star', 'disc'))
    with pytest.raises(BadDatasetError, match=r"metainfo classes are \['star', 'disc'\] but the "
                       r"file lists these categories in the order \['disc', 'star'\]"):
        CheckedCocoDataset(**kwargs)


def test_two_categories_of_one_name_stop(toy):
    def rename(data):
        data['categories'][1]['name'] = data['categories'][0]['name']
    kwargs = dataset_kwargs(toy, ann_file=rewrite(toy, rename))
    kwargs['metainfo'] = dict(classes=('disc', ))
    with pytest.raises(BadDatasetError, match=r"several categories are named \['disc'\]"):
        CheckedCocoDataset(**kwargs)


def test_class_checks_take_odd_ids_without_a_type_error():
    """Ids of mixed types, or an annotation's category_id that is a list, are reported (or
    left to the file checks), not a TypeError from sorting or hashing them."""
    from ms_rcnn.datasets.coco_checks import class_mismatch, left_out_warning
    categories = [dict(id=2, name='star'), dict(id='star2', name='star'),
                  dict(id=10, name='disc')]
    assert class_mismatch(['star'], categories) == (
        "several categories are named ['star'] (ids [2, 'star2']); each class needs one "
        "category: rename or merge them in the file")
    annotations = [dict(id=1, category_id=[10]), dict(id=2, category_id=10),
                   dict(id=3, category_id=2)]
    assert left_out_warning(['star'], categories, annotations).startswith(
        "categories ['disc'] are not metainfo classes, so their 1 annotation(s) are left out")


def test_two_categories_of_a_name_no_class_names_are_kept_with_a_warning(toy, monkeypatch):
    messages = []
    monkeypatch.setattr(checked_coco, 'print_log', lambda msg, **kw: messages.append(msg))

    def add_second_star(data):
        data['categories'].append(dict(id=9, name='star'))
    kwargs = dataset_kwargs(toy, ann_file=rewrite(toy, add_second_star))
    kwargs['metainfo'] = dict(classes=('disc', ))
    dataset = CheckedCocoDataset(**kwargs)
    assert dataset.metainfo['classes'] == ('disc', ) and len(dataset) > 0
    assert "duplicate_category_name: categories [2, 9] share the name 'star'" in \
        '\n'.join(messages)


def test_categories_left_out_of_the_classes_warn_with_their_count(toy, monkeypatch):
    messages = []
    monkeypatch.setattr(checked_coco, 'print_log', lambda msg, **kw: messages.append(msg))
    with open(osp.join(toy, 'annotations', 'instances_train.json')) as f:
        data = json.load(f)
    star = [c['id'] for c in data['categories'] if c['name'] == 'star']
    stars = sum(1 for a in data['annotations'] if a['category_id'] in star)
    kwargs = dataset_kwargs(toy)
    kwargs['metainfo'] = dict(classes=('disc', ))
    dataset = CheckedCocoDataset(**kwargs)
    assert stars > 0 and dataset.metainfo['classes'] == ('disc', )
    assert f"categories ['star'] are not metainfo classes, so their {stars} annotation(s) " \
        "are left out" in '\n'.join(messages)
    messages.clear()
    CheckedCocoDataset(**dataset_kwargs(toy))
    assert not any('not metainfo classes' in m for m in messages)


def test_rle_masks_with_polygon_loading_warn_naming_them(toy, monkeypatch):
    from pycocotools import mask as mask_utils
    messages = []
    monkeypatch.setattr(checked_coco, 'print_log', lambda msg, **kw: messages.append(msg))

    def edit(data):
        ann = data['annotations'][0]
        image = next(i for i in data['images'] if i['id'] == ann['image_id'])
        rle = mask_utils.merge(mask_utils.frPyObjects(ann['segmentation'], image['height'],
                                                      image['width']))
        ann['segmentation'] = dict(size=rle['size'], counts=rle['counts'].decode())

    ann_file = rewrite(toy, edit)
    with open(osp.join(toy, ann_file)) as f:
        rle_id = json.load(f)['annotations'][0]['id']
    polygons = dataset_kwargs(toy, ann_file)
    polygons['pipeline'][1]['poly2mask'] = False
    CheckedCocoDataset(**polygons)
    warned = [m for m in messages if 'RLE masks' in m]
    assert len(warned) == 1 and f'[{rle_id}]' in warned[0] and 'poly2mask=False' in warned[0]
    messages.clear()
    CheckedCocoDataset(**dataset_kwargs(toy, ann_file))  # bitmaps: RLEs are used
    assert not any('RLE masks' in m for m in messages)


def test_finite_loss_hook_refuses_to_save_weights_poisoned_by_a_gradient(tmp_path):
    """sqrt(w) at w = 0: the loss is 0, its gradient infinite, and SGD makes w -inf. Without
    the check iter_1.pth was saved with that weight (the loss turns NaN only at iteration 2)."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Sqrt(BaseModel):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, mode='tensor'):
            return dict(loss=torch.sqrt(self.w).sum() + 0 * x.sum())

    loader = dict(dataset=[dict(x=torch.ones(1)) for _ in range(4)], batch_size=1,
                  sampler=dict(type='DefaultSampler', shuffle=False),
                  collate_fn=dict(type='default_collate'))
    runner = Runner(model=Sqrt(), work_dir=str(tmp_path), train_dataloader=loader,
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                    train_cfg=dict(by_epoch=False, max_iters=4),
                    default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                                       by_epoch=False)),
                    custom_hooks=[CheckFiniteLossHook()], log_level='ERROR',
                    experiment_name=tmp_path.name, default_scope=None)  # none left behind
    with pytest.raises(NonFiniteLossError) as info:
        runner.train()
    assert 'epoch 0, iteration 1: the weights hold NaN or infinite values (w)' in \
        str(info.value)
    assert not list(tmp_path.glob('*.pth'))


def test_non_finite_tensors_names_only_floating_tensors():
    from ms_rcnn.engine.hooks import non_finite_tensors
    state = dict(a=torch.ones(2), b=torch.tensor([1.0, math.nan]), c=torch.tensor([3]),
                 d=torch.tensor([math.inf]), e='text')
    assert non_finite_tensors(state) == ['b', 'd']
