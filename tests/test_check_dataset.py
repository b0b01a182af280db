"""tools/check_dataset.py: one small broken dataset per problem kind, the CLI and configs."""
import copy
import importlib.util
import json
import math
import os
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ms_rcnn.datasets import coco_checks
from ms_rcnn.testing import REPO_ROOT

_spec = importlib.util.spec_from_file_location(
    'check_dataset', osp.join(REPO_ROOT, 'tools', 'check_dataset.py'))
cd = importlib.util.module_from_spec(_spec)
sys.modules['check_dataset'] = cd  # dataclasses look their module up there
_spec.loader.exec_module(cd)

H, W = 40, 60


def square(x, y, side):
    """A flat square polygon."""
    return [x, y, x + side, y, x + side, y + side, x, y + side]


def rle_of_box(x, y, w, h, size=(H, W)):
    """A compressed RLE (JSON-ready) of a filled box."""
    mask = np.zeros(size, np.uint8, order='F')
    mask[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(mask)
    return dict(size=list(rle['size']), counts=rle['counts'].decode('ascii'))


def write_image(path, height=H, width=W, value=80):
    cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))


def truncated_jpeg(height=H, width=W):
    """The first half of a JPEG of noise."""
    noise = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    data = cv2.imencode('.jpg', noise)[1].tobytes()
    return data[:len(data) // 2]


def make_dataset(root):
    """A clean dataset: img1.png with a polygon annotation (id 10), img2.png with an RLE (20)."""
    img_dir = root / 'images'
    img_dir.mkdir(parents=True)
    for name in ('img1.png', 'img2.png'):
        write_image(img_dir / name)
    ann = dict(
        images=[dict(id=1, file_name='img1.png', height=H, width=W),
                dict(id=2, file_name='img2.png', height=H, width=W)],
        annotations=[
            dict(id=10, image_id=1, category_id=1, segmentation=[square(5, 5, 10)],
                 area=100.0, bbox=[5, 5, 10, 10], iscrowd=0),
            dict(id=20, image_id=2, category_id=1, segmentation=rle_of_box(10, 8, 20, 12),
                 area=240.0, bbox=[10, 8, 20, 12], iscrowd=0)],
        categories=[dict(id=1, name='thing')])
    return ann, str(img_dir)


def refs(problems):
    """The (kind, image file, annotation id) of each problem."""
    return {(p.kind, p.image, p.ann_id) for p in problems}


def _set(obj, key, value):
    obj[key] = value


# Each case: (name, mutate(ann, img_dir), expected {(kind, image, ann_id)}).
CASES = [
    ('image_missing', lambda a, d: os.remove(osp.join(d, 'img2.png')),
     {('image_missing', 'img2.png', None)}),
    ('image_unreadable',
     lambda a, d: open(osp.join(d, 'img2.png'), 'wb').write(b'not a png at all'),
     {('image_unreadable', 'img2.png', None)}),
    # cv2.imread decodes the first half and fills the rest grey; the pipeline's decoder refuses it
    ('image_unreadable_truncated_jpeg',
     lambda a, d: open(osp.join(d, 'img2.png'), 'wb').write(truncated_jpeg()),
     {('image_unreadable', 'img2.png', None)}),
    ('image_unreadable_empty_file', lambda a, d: open(osp.join(d, 'img2.png'), 'wb').close(),
     {('image_unreadable', 'img2.png', None)}),
    ('image_size_mismatch', lambda a, d: write_image(osp.join(d, 'img1.png'), height=H + 10),
     {('image_size_mismatch', 'img1.png', None)}),
    ('duplicate_image_id',
     lambda a, d: (write_image(osp.join(d, 'img3.png')),
                   a['images'].append(dict(id=1, file_name='img3.png', height=H, width=W))),
     {('duplicate_image_id', 'img3.png', None)}),
    ('duplicate_file_name',
     lambda a, d: a['images'].append(dict(id=3, file_name='img1.png', height=H, width=W)),
     {('duplicate_file_name', 'img1.png', None),
      ('image_without_annotations', 'img1.png', None)}),
    ('duplicate_file_name_of_another_size',  # each size the file is said to have is checked
     lambda a, d: a['images'].append(dict(id=3, file_name='img1.png', height=50, width=60)),
     {('duplicate_file_name', 'img1.png', None), ('image_size_mismatch', 'img1.png', None),
      ('image_without_annotations', 'img1.png', None)}),
    ('image_without_annotations', lambda a, d: a['annotations'].pop(),
     {('image_without_annotations', 'img2.png', None)}),
    ('invalid_image_entry', lambda a, d: a['images'][1].pop('height'),
     {('invalid_image_entry', 'img2.png', None)}),
    ('duplicate_annotation_id', lambda a, d: _set(a['annotations'][1], 'id', 10),
     {('duplicate_annotation_id', 'img2.png', 10)}),
    ('unknown_image_id', lambda a, d: _set(a['annotations'][1], 'image_id', 99),
     {('unknown_image_id', None, 20), ('image_without_annotations', 'img2.png', None)}),
    ('unknown_category_id', lambda a, d: _set(a['annotations'][0], 'category_id', 7),
     {('unknown_category_id', 'img1.png', 10)}),
    ('invalid_annotation_entry', lambda a, d: a['annotations'][0].pop('category_id'),
     {('invalid_annotation_entry', 'img1.png', 10)}),
    ('segmentation_invalid_flat_polygon', lambda a, d: _set(a['annotations'][0], 'segmentation',
                                                            square(5, 5, 10)),
     {('segmentation_invalid', 'img1.png', 10)}),
    ('polygon_too_few_points', lambda a, d: _set(a['annotations'][0], 'segmentation',
                                                 [[5, 5, 15, 15]]),
     {('polygon_too_few_points', 'img1.png', 10)}),
    ('polygon_odd_length', lambda a, d: _set(a['annotations'][0], 'segmentation',
                                             [square(5, 5, 10) + [7]]),
     {('polygon_odd_length', 'img1.png', 10)}),
    ('mask_zero_area_polygon', lambda a, d: _set(a['annotations'][0], 'segmentation',
                                                 [[5, 5, 10, 10, 15, 15]]),
     {('mask_zero_area', 'img1.png', 10)}),
    ('mask_zero_area_rle', lambda a, d: _set(a['annotations'][1], 'segmentation',
                                             dict(size=[H, W], counts=[H * W])),
     {('mask_zero_area', 'img2.png', 20)}),
    ('mask_zero_area_compressed_rle',
     lambda a, d: _set(a['annotations'][1], 'segmentation', rle_of_box(0, 0, 0, 0)),
     {('mask_zero_area', 'img2.png', 20)}),
    ('polygon_zero_area_part', lambda a, d: _set(a['annotations'][0], 'segmentation',
                                                 [square(5, 5, 10), [5, 5, 6, 6, 7, 7]]),
     {('polygon_zero_area_part', 'img1.png', 10)}),
    ('rle_size_mismatch', lambda a, d: _set(a['annotations'][1], 'segmentation',
                                            rle_of_box(10, 8, 20, 12, size=(H, W + 5))),
     {('rle_size_mismatch', 'img2.png', 20)}),
    ('segmentation_invalid_rle_runs', lambda a, d: _set(a['annotations'][1], 'segmentation',
                                                        dict(size=[H, W], counts=[5, 5])),
     {('segmentation_invalid', 'img2.png', 20)}),
    ('segmentation_invalid_rle_string',
     lambda a, d: _set(a['annotations'][1], 'segmentation', dict(size=[H, W], counts='0')),
     {('segmentation_invalid', 'img2.png', 20)}),
    ('segmentation_invalid_type', lambda a, d: _set(a['annotations'][0], 'segmentation', 'x'),
     {('segmentation_invalid', 'img1.png', 10)}),
    ('segmentation_missing', lambda a, d: a['annotations'][0].pop('segmentation'),
     {('segmentation_missing', 'img1.png', 10)}),
    ('segmentation_empty', lambda a, d: _set(a['annotations'][1], 'segmentation', []),
     {('segmentation_missing', 'img2.png', 20)}),
    ('bbox_out_of_bounds', lambda a, d: _set(a['annotations'][0], 'bbox', [50, 5, 12, 10]),
     {('bbox_out_of_bounds', 'img1.png', 10)}),
    ('bbox_negative_origin', lambda a, d: _set(a['annotations'][0], 'bbox', [-2, 5, 10, 10]),
     {('bbox_out_of_bounds', 'img1.png', 10)}),
    ('bbox_within_tolerance',
     lambda a, d: _set(a['annotations'][0], 'bbox', [-0.9, -0.9, W + 1.8, H + 1.8]), set()),
    ('bbox_nonpositive_size', lambda a, d: _set(a['annotations'][0], 'bbox', [5, 5, 0, 10]),
     {('bbox_nonpositive_size', 'img1.png', 10)}),
    ('bbox_too_small', lambda a, d: _set(a['annotations'][0], 'bbox', [5, 5, 0.5, 10]),
     {('bbox_too_small', 'img1.png', 10)}),
    ('bbox_too_small_height', lambda a, d: _set(a['annotations'][0], 'bbox', [5, 5, 10, 0.5]),
     {('bbox_too_small', 'img1.png', 10)}),
    ('bbox_out_of_bounds_bottom',
     lambda a, d: _set(a['annotations'][0], 'bbox', [5, H - 5, 10, 10]),
     {('bbox_out_of_bounds', 'img1.png', 10)}),
    ('bbox_out_of_bounds_top', lambda a, d: _set(a['annotations'][0], 'bbox', [5, -2, 10, 10]),
     {('bbox_out_of_bounds', 'img1.png', 10)}),
    ('bbox_invalid', lambda a, d: _set(a['annotations'][0], 'bbox', [5, 5, 10]),
     {('bbox_invalid', 'img1.png', 10)}),
    ('nonfinite_bbox', lambda a, d: _set(a['annotations'][0], 'bbox', [math.nan, 5, 10, 10]),
     {('nonfinite_coordinates', 'img1.png', 10)}),
    ('nonfinite_polygon', lambda a, d: _set(a['annotations'][0], 'segmentation',
                                            [[5, 5, math.inf, 5, 15, 15]]),
     {('nonfinite_coordinates', 'img1.png', 10)}),
    ('area_missing', lambda a, d: a['annotations'][0].pop('area'),
     {('area_invalid', 'img1.png', 10)}),
    ('area_zero', lambda a, d: _set(a['annotations'][1], 'area', 0),
     {('area_invalid', 'img2.png', 20)}),
    ('nonfinite_huge_int', lambda a, d: _set(a['annotations'][0], 'bbox', [5, 5, 10, 10**400]),
     {('nonfinite_coordinates', 'img1.png', 10)}),
    ('nonfinite_huge_int_area', lambda a, d: _set(a['annotations'][1], 'area', 10**400),
     {('nonfinite_coordinates', 'img2.png', 20)}),
    ('invalid_image_entry_huge_width', lambda a, d: _set(a['images'][0], 'width', 10**400),
     {('invalid_image_entry', 'img1.png', None)}),
    ('iscrowd_missing', lambda a, d: a['annotations'][0].pop('iscrowd'),
     {('iscrowd_invalid', 'img1.png', 10)}),
    ('iscrowd_string', lambda a, d: _set(a['annotations'][1], 'iscrowd', '0'),
     {('iscrowd_invalid', 'img2.png', 20)}),
    ('iscrowd_two', lambda a, d: _set(a['annotations'][1], 'iscrowd', 2),
     {('iscrowd_invalid', 'img2.png', 20)}),
    ('iscrowd_bool_and_one', lambda a, d: (_set(a['annotations'][0], 'iscrowd', False),
                                           _set(a['annotations'][1], 'iscrowd', 1)), set()),
    ('duplicate_category_id', lambda a, d: a['categories'].append(dict(id=1, name='again')),
     {('duplicate_category_id', None, None)}),
    ('duplicate_category_name', lambda a, d: a['categories'].append(dict(id=3, name='thing')),
     {('duplicate_category_name', None, None)}),
    ('invalid_category_entry', lambda a, d: a['categories'].append(dict(name='no id')),
     {('invalid_category_entry', None, None)}),
    ('invalid_structure_section', lambda a, d: a.pop('annotations'),
     {('invalid_structure', None, None)}),
    ('invalid_structure_no_categories', lambda a, d: a['categories'].clear(),
     {('invalid_structure', None, None)}),
]


def run_case(tmp_path, mutate):
    ann, img_dir = make_dataset(tmp_path)
    mutate(ann, img_dir)
    return cd.check_coco(ann, img_dir)


def test_clean_dataset_has_no_problems(tmp_path):
    ann, img_dir = make_dataset(tmp_path)
    assert cd.check_coco(ann, img_dir) == []


@pytest.mark.parametrize('mutate, expected', [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_kind_is_found_and_named(tmp_path, mutate, expected):
    problems = run_case(tmp_path, mutate)
    assert refs(problems) == expected
    assert all(p.severity == coco_checks.SEVERITY[p.kind] for p in problems)
    assert all(p.message for p in problems)


def test_cases_cover_every_kind_and_the_docstring_documents_them(tmp_path):
    covered = {kind for _, _, expected in CASES for kind, _, _ in expected}
    assert covered == set(coco_checks.SEVERITY)
    table = {}
    for line in coco_checks.__doc__.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] in coco_checks.SEVERITY:
            table[words[0]] = words[1]
    assert table == coco_checks.SEVERITY


def test_top_level_not_an_object():
    problems = cd.check_coco([], None)
    assert [(p.severity, p.kind) for p in problems] == [('error', 'invalid_structure')]


def test_every_problem_is_listed_not_just_the_first(tmp_path):
    ann, img_dir = make_dataset(tmp_path)
    os.remove(osp.join(img_dir, 'img1.png'))
    ann['annotations'][0]['segmentation'] = [[1, 2, 3, 4]]
    ann['annotations'][0]['category_id'] = 5
    ann['annotations'][1]['bbox'] = [0, 0, W + 5, H]
    ann['annotations'].append(dict(ann['annotations'][1], id=10, image_id=42))
    assert refs(cd.check_coco(ann, img_dir)) == {
        ('image_missing', 'img1.png', None),
        ('unknown_category_id', 'img1.png', 10),
        ('polygon_too_few_points', 'img1.png', 10),
        ('bbox_out_of_bounds', 'img2.png', 20),
        ('unknown_image_id', None, 10),
        ('duplicate_annotation_id', None, 10),
    }


def test_image_checks_can_be_skipped_and_masks_made_optional(tmp_path):
    ann, img_dir = make_dataset(tmp_path)
    os.remove(osp.join(img_dir, 'img1.png'))
    del ann['annotations'][0]['segmentation']
    assert refs(cd.check_coco(ann, img_dir, check_images=False, expect_masks=False)) == set()
    assert refs(cd.check_coco(ann, None)) == {('segmentation_missing', 'img1.png', 10)}


def test_swapped_size_is_pointed_out(tmp_path):
    ann, img_dir = make_dataset(tmp_path)
    write_image(osp.join(img_dir, 'img2.png'), height=W, width=H)
    (problem,) = cd.check_coco(ann, img_dir)
    assert problem.kind == 'image_size_mismatch' and 'swapped' in problem.message


def exif_turned_image(path, height, width):
    """A JPEG stored ``height`` x ``width`` whose EXIF orientation (6) turns it by 90 degrees."""
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new('RGB', (width, height)).save(path, format='JPEG', exif=exif.tobytes())


def test_exif_orientation_can_be_ignored_as_the_pipeline_does(tmp_path, capsys):
    ann, img_dir = make_dataset(tmp_path)
    exif_turned_image(osp.join(img_dir, 'img2.png'), H, W)  # annotated as stored
    (problem,) = cd.check_coco(ann, img_dir)
    assert problem.kind == 'image_size_mismatch' and 'color_ignore_orientation' in problem.message
    assert cd.check_coco(ann, img_dir, color_type='color_ignore_orientation') == []
    ann_file = tmp_path / 'ann.json'
    write_json(ann_file, ann)
    assert cd.main([str(ann_file), str(img_dir)]) == 1
    assert cd.main([str(ann_file), str(img_dir), '--ignore-exif-orientation']) == 0
    # A config whose pipeline reads the stored pixels is checked the same way.
    dataset = (f'dict(ann_file={str(ann_file)!r}, data_prefix=dict(img={str(img_dir) + "/"!r}), '
               'pipeline=[dict(type="LoadImageFromFile"{}), dict(type="PackDetInputs")])')
    for color_type, code in (('', 1), (', color_type="color_ignore_orientation"', 0),
                             (', color_type="unchanged"', 0)):
        config = write_config(tmp_path, 'train_dataloader = dict(dataset=dict(type="RepeatDataset",'
                              f' times=2, dataset={dataset.format(color_type)}))\n')
        assert cd.main([config]) == code, capsys.readouterr().out


def test_rle_string_counts_matches_pycocotools():
    rle = rle_of_box(3, 4, 17, 9)
    runs = coco_checks.rle_string_counts(rle['counts'])
    assert sum(runs) == H * W and sum(runs[1::2]) == 17 * 9 == mask_utils.area(rle)


def test_shoelace_area():
    assert coco_checks.shoelace_area(square(0, 0, 3)) == 9
    assert coco_checks.shoelace_area([0, 0, 4, 0, 0, 3]) == 6
    assert coco_checks.shoelace_area([0, 0, 1, 1, 2, 2]) == 0


# ----------------------------------------------------------------------------- CLI

def write_json(path, obj):
    with open(path, 'w') as f:
        json.dump(obj, f)
    return str(path)


def test_main_exit_0_on_clean_data(tmp_path, capsys):
    ann, img_dir = make_dataset(tmp_path)
    assert cd.main([write_json(tmp_path / 'a.json', ann), img_dir]) == 0
    out = capsys.readouterr().out
    assert 'images: 2, annotations: 2, categories: 1' in out and '0 error(s), 0 warning(s)' in out


def test_main_exit_0_with_only_warnings(tmp_path, capsys):
    ann, img_dir = make_dataset(tmp_path)
    ann['annotations'].pop()
    assert cd.main([write_json(tmp_path / 'a.json', ann), img_dir]) == 0
    out = capsys.readouterr().out
    assert '0 error(s), 1 warning(s)' in out and 'image_without_annotations' in out


def test_main_exit_1_with_errors_and_writes_json_report(tmp_path, capsys):
    ann, img_dir = make_dataset(tmp_path)
    ann['annotations'][0]['bbox'] = [math.nan, 5, 10, 10]  # NaN survives the JSON round trip
    ann['annotations'][1]['category_id'] = 3
    ann['annotations'].append(dict(ann['annotations'][0], id=30, image_id=77))
    ann_file = write_json(tmp_path / 'a.json', ann)
    report = tmp_path / 'report.json'
    assert cd.main([ann_file, img_dir, '--json', str(report), '--max-print', '2']) == 1
    out = capsys.readouterr().out
    assert '4 error(s), 0 warning(s)' in out and '2 more not shown' in out
    assert 'FAILED' in out
    data = json.loads(report.read_text())
    assert data['errors'] == 4
    (only,) = data['reports']
    assert only['summary'] == {'error': {'nonfinite_coordinates': 2, 'unknown_category_id': 1,
                                         'unknown_image_id': 1}, 'warning': {}}
    assert {(p['kind'], p['ann_id']) for p in only['problems']} == {
        ('nonfinite_coordinates', 10), ('nonfinite_coordinates', 30),
        ('unknown_category_id', 20), ('unknown_image_id', 30)}
    assert data['status'] == 1


def test_an_unreadable_input_replaces_an_earlier_json_report(tmp_path, capsys):
    """A CI step reading the report must not see the last run's pass."""
    ann, img_dir = make_dataset(tmp_path)
    ann_file = write_json(tmp_path / 'a.json', ann)
    report = tmp_path / 'report.json'
    assert cd.main([ann_file, img_dir, '--json', str(report)]) == 0
    assert json.loads(report.read_text())['status'] == 0
    gone = str(tmp_path / 'gone.json')
    assert cd.main([gone, img_dir, '--json', str(report)]) == 2
    written = json.loads(report.read_text())
    assert written['status'] == 2 and written['reports'] == [] and written['errors'] is None
    assert gone in written['input_errors'][0]
    assert cd.main([ann_file, str(tmp_path / 'no_images'), '--json', str(report)]) == 2
    assert json.loads(report.read_text())['input_errors'] == [
        f"image directory {tmp_path / 'no_images'} does not exist"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')) == []


def test_data_root_with_an_annotation_file_is_refused(tmp_path, capsys):
    ann, img_dir = make_dataset(tmp_path)
    ann_file = write_json(tmp_path / 'a.json', ann)
    with pytest.raises(SystemExit) as stop:
        cd.main([ann_file, img_dir, '--data-root', '/does/not/exist'])
    assert stop.value.code == 2
    assert '--data-root goes with CONFIG --split' in capsys.readouterr().err


@pytest.mark.parametrize('content, says', [
    ('{"images": [', 'is not valid JSON'),
    (b'\xff\xfe\x00garbage', 'is not valid JSON'),
    (None, 'cannot read annotation file'),
])
def test_main_unreadable_annotation_file(tmp_path, capsys, content, says):
    path = tmp_path / 'broken.json'
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    assert cd.main([str(path), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert says in err and str(path) in err and 'Traceback' not in err


def test_main_missing_image_directory_is_one_error(tmp_path, capsys):
    ann = {'images': [{'id': i, 'file_name': f'{i}.png', 'height': 8, 'width': 8}
                      for i in range(5)], 'annotations': [],
           'categories': [{'id': 1, 'name': 'a'}]}
    missing = str(tmp_path / 'images' / 'val')
    assert cd.main([write_json(tmp_path / 'a.json', ann), missing]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f'error: image directory {missing} does not exist'
    assert cd.main([write_json(tmp_path / 'a.json', ann), missing, '--skip-images']) == 0


def test_main_json_not_an_object(tmp_path, capsys):
    assert cd.main([write_json(tmp_path / 'a.json', [1, 2]), str(tmp_path)]) == 1
    assert 'invalid_structure' in capsys.readouterr().out


# ----------------------------------------------------------------------------- configs

def write_config(tmp_path, body):
    path = tmp_path / 'cfg.py'
    path.write_text(body)
    return str(path)


@pytest.fixture
def config_dataset(tmp_path):
    """A clean train split and a val split with an unknown category, plus a config."""
    root = tmp_path / 'data'
    ann, _ = make_dataset(root)
    (root / 'annotations').mkdir()
    write_json(root / 'annotations' / 'train.json', ann)
    broken = copy.deepcopy(ann)
    broken['annotations'][0]['category_id'] = 9
    write_json(root / 'annotations' / 'val.json', broken)
    config = write_config(tmp_path, (
        f'data_root = {str(root) + "/"!r}\n'
        'train_dataloader = dict(dataset=dict(type="RepeatDataset", times=2, dataset=dict(\n'
        '    data_root=data_root, ann_file="annotations/train.json",\n'
        '    data_prefix=dict(img="images/"))))\n'
        'val_dataloader = dict(dataset=dict(data_root=data_root,\n'
        '    ann_file="annotations/val.json", data_prefix=dict(img="images/")))\n'))
    return config, root


def test_filter_cfg_counts_outside_test_mode_only(tmp_path):
    """mmdet filters only training-mode datasets; classes unknown (None) keep every category."""
    dataset = dict(ann_file='a.json', data_prefix=dict(img='images/'),
                   filter_cfg=dict(filter_empty_gt=True, min_size=32))
    train = cd._dataset_source(dataset, '', None)
    assert (train.filter_empty_gt, train.min_size) == (True, 32)
    test = cd._dataset_source(dict(dataset, test_mode=True), '', None)
    assert (test.filter_empty_gt, test.min_size) == (False, 0)
    ann = dict(images=[dict(id=1, width=64, height=48)], categories=[dict(id=1, name='x')],
               annotations=[dict(id=1, image_id=1, category_id=1)])
    assert cd.emptiness_errors(train, ann) == []


def test_config_sources_join_data_root_through_wrappers(config_dataset):
    config, root = config_dataset
    assert cd.sources_from_config(config, 'train') == [
        (osp.join(str(root), 'annotations/train.json'), osp.join(str(root), 'images/'), 'color',
         None, False, 0)]


def test_config_split_exit_codes(config_dataset, capsys):
    config, _ = config_dataset
    assert cd.main([config, '--split', 'train']) == 0
    assert cd.main([config, '--split', 'val']) == 1
    out = capsys.readouterr().out
    assert 'unknown_category_id' in out and 'annotation 10' in out
    assert cd.main([config, '--split', 'test']) == 2
    assert 'has no test_dataloader' in capsys.readouterr().err


def test_config_relative_data_root_and_override(config_dataset, tmp_path, monkeypatch):
    config, root = config_dataset
    monkeypatch.chdir(tmp_path)
    rel = write_config(tmp_path / 'data', (
        'val_dataloader = dict(dataset=dict(data_root="data/",\n'
        '    ann_file="annotations/train.json", data_prefix=dict(img="images/")))\n'))
    assert cd.sources_from_config(rel, 'val') == [('data/annotations/train.json',
                                                   'data/images/', 'color', None, False, 0)]
    assert cd.main([rel, '--split', 'val']) == 0
    assert cd.main([config, '--split', 'val', '--data-root', str(tmp_path / 'nowhere')]) == 2


def classes_config(tmp_path, root, classes, evaluator_file='annotations/val.json'):
    return write_config(tmp_path, (
        f'data_root = {str(root) + "/"!r}\n'
        'val_dataloader = dict(dataset=dict(type="ms_rcnn.CheckedCocoDataset",\n'
        f'    data_root=data_root, metainfo=dict(classes={classes!r}),\n'
        '    ann_file="annotations/val.json", data_prefix=dict(img="images/")))\n'
        f'val_evaluator = dict(type="ms_rcnn.MaskScoringCocoMetric", '
        f'ann_file=data_root + {evaluator_file!r})\n'))


@pytest.fixture
def two_class_dataset(tmp_path):
    """A clean val split with categories 'thing' (id 1) and 'other' (id 5, one annotation)."""
    root = tmp_path / 'data'
    ann, _ = make_dataset(root)
    ann['categories'].append(dict(id=5, name='other'))
    ann['annotations'][1]['category_id'] = 5
    (root / 'annotations').mkdir()
    write_json(root / 'annotations' / 'val.json', ann)
    write_json(root / 'annotations' / 'train.json', ann)
    return root


@pytest.mark.parametrize('classes, code, says', [
    (('thing', 'other'), 0, None),
    (('other', 'thing'), 1, "the file lists these categories in the order ['thing', 'other']"),
    (('thing', 'othre'), 1, "metainfo classes ['othre'] are not categories of this file"),
    (('thing', ), 0, "warning  categories ['other'] are not metainfo classes, so their 1 "
                     "annotation(s) are left out"),
    ('thing', 1, "metainfo.classes is the string 'thing', not a tuple of names"),
])
def test_config_classes_are_checked_against_the_file(two_class_dataset, tmp_path, capsys,
                                                     classes, code, says):
    """What CheckedCocoDataset would refuse (or warn about) when it is built."""
    config = classes_config(tmp_path, two_class_dataset, classes)
    assert cd.main([config, '--split', 'val']) == code
    captured = capsys.readouterr()
    if says is not None:
        assert says in captured.out + captured.err


def test_string_classes_of_a_later_concatenated_dataset_are_an_error(two_class_dataset,
                                                                     tmp_path, capsys):
    """ConcatDataset labels by its first dataset; the second one's classes must still be
    readable, or building it stops training."""
    one = (f'dict(type="ms_rcnn.CheckedCocoDataset", data_root={str(two_class_dataset) + "/"!r}, '
           'ann_file="annotations/val.json", data_prefix=dict(img="images/"), '
           'metainfo=dict(classes={}))')
    config = write_config(tmp_path, (
        'val_dataloader = dict(dataset=dict(type="ConcatDataset", datasets=[\n'
        f'    {one.format(repr(("thing", "other")))},\n'
        f'    {one.format(repr("thing"))}]))\n'))
    assert cd.main([config, '--split', 'val']) == 1
    out = capsys.readouterr().out
    assert f"error: {config}: val_dataloader.dataset: metainfo.classes is the string 'thing'" \
        in out
    assert out.count('metainfo.classes is the string') == 1 and 'FAILED' in out


def test_config_evaluator_must_hold_the_datasets_images(two_class_dataset, tmp_path, capsys):
    annotations = two_class_dataset / 'annotations'
    val = json.loads((annotations / 'val.json').read_text())
    write_json(annotations / 'copy.json', val)  # another path, the same images: fine
    config = classes_config(tmp_path, two_class_dataset, ('thing', 'other'),
                            evaluator_file='annotations/copy.json')
    assert cd.main([config, '--split', 'val']) == 0
    other = copy.deepcopy(val)
    other['images'][1]['file_name'] = 'elsewhere.png'
    write_json(annotations / 'other.json', other)
    config = classes_config(tmp_path, two_class_dataset, ('thing', 'other'),
                            evaluator_file='annotations/other.json')
    assert cd.main([config, '--split', 'val']) == 1
    assert f"val_evaluator.ann_file {annotations}/other.json lacks 1 of the 2 images of " \
        "val_dataloader.dataset" in capsys.readouterr().out
    more = copy.deepcopy(val)
    more['images'].append(dict(id=9, file_name='img9.png', height=H, width=W))
    write_json(annotations / 'more.json', more)
    config = classes_config(tmp_path, two_class_dataset, ('thing', 'other'),
                            evaluator_file='annotations/more.json')
    assert cd.main([config, '--split', 'val']) == 0
    assert 'more.json has 1 images more than val_dataloader.dataset' in capsys.readouterr().out
    config = classes_config(tmp_path, two_class_dataset, ('thing', 'other'),
                            evaluator_file='annotations/gone.json')
    assert cd.main([config, '--split', 'val']) == 1
    assert 'annotations/gone.json does not exist' in capsys.readouterr().out
    config = classes_config(tmp_path, two_class_dataset, ('thing', 'other'))
    assert cd.main([config, '--split', 'val', '--data-root', str(two_class_dataset)]) == 0


def test_config_heads_that_disagree_with_the_classes_are_refused(two_class_dataset, tmp_path,
                                                                  capsys):
    config = classes_config(tmp_path, two_class_dataset, ('thing', 'other'))
    with open(config, 'a') as f:
        f.write('model = dict(roi_head=dict(bbox_head=dict(num_classes=1)))\n')
    report = tmp_path / 'report.json'
    assert cd.main([config, '--split', 'val', '--json', str(report)]) == 1
    out = capsys.readouterr().out
    assert f'error: {config}: the number of classes differs' in out
    assert 'model.roi_head.bbox_head.num_classes: 1' in out
    # the data were checked all the same, and the report says what was wrong
    assert 'images: 2, annotations: 2, categories: 2' in out and 'FAILED' in out
    written = json.loads(report.read_text())
    assert written['errors'] == 1 and 'the number of classes differs' in \
        written['config_errors'][0]


def test_a_dataset_left_without_images_is_an_error(two_class_dataset, tmp_path, capsys):
    """Training would stop on it with a bare ValueError from mmengine; the checker said OK."""
    annotations = two_class_dataset / 'annotations'
    val = json.loads((annotations / 'val.json').read_text())
    write_json(annotations / 'empty.json', dict(val, images=[], annotations=[]))
    report = tmp_path / 'report.json'
    assert cd.main([str(annotations / 'empty.json'), '--skip-images', '--json',
                    str(report)]) == 1
    assert 'error    the file lists no images, so the dataset would be empty' in \
        capsys.readouterr().out
    assert json.loads(report.read_text())['reports'][0]['dataset_errors'] == [
        'the file lists no images, so the dataset would be empty']
    # Training keeps only images with an annotation of the classes: here none has one.
    write_json(annotations / 'train.json', dict(val, annotations=[]))
    config = write_config(tmp_path, (
        f'data_root = {str(two_class_dataset) + "/"!r}\n'
        'train_dataloader = dict(dataset=dict(type="ms_rcnn.CheckedCocoDataset",\n'
        '    data_root=data_root, metainfo=dict(classes=("thing", "other")),\n'
        '    filter_cfg=dict(filter_empty_gt=True),\n'
        '    ann_file="annotations/train.json", data_prefix=dict(img="images/")))\n'))
    assert cd.main([config, '--split', 'train']) == 1
    assert 'filter_cfg.filter_empty_gt=True keeps only images with an annotation of the ' \
        'classes, and no image has one' in capsys.readouterr().out
    write_json(annotations / 'train.json', val)
    assert cd.main([config, '--split', 'train']) == 0
    capsys.readouterr()
    # mmdet's min_size filter applies with or without filter_empty_gt
    sizes = sorted(min(i['width'], i['height']) for i in val['images'])
    for filter_cfg, status in ((f'dict(min_size={sizes[-1] + 1})', 1),
                               (f'dict(min_size={sizes[-1]})', 0),
                               (f'dict(filter_empty_gt=True, min_size={sizes[-1] + 1})', 1)):
        config = write_config(tmp_path, (
            f'data_root = {str(two_class_dataset) + "/"!r}\n'
            'train_dataloader = dict(dataset=dict(type="ms_rcnn.CheckedCocoDataset",\n'
            '    data_root=data_root, metainfo=dict(classes=("thing", "other")),\n'
            f'    filter_cfg={filter_cfg},\n'
            '    ann_file="annotations/train.json", data_prefix=dict(img="images/")))\n'))
        assert cd.main([config, '--split', 'train']) == status, filter_cfg
        out = capsys.readouterr().out
        assert (f'filter_cfg.min_size={sizes[-1] + 1} keeps only images of at least that many '
                'pixels on a side' in out) == bool(status), out


def test_config_unreadable(tmp_path, capsys):
    bad = write_config(tmp_path, 'train_dataloader = dict(\n')
    assert cd.main([bad, '--split', 'train']) == 2
    err = capsys.readouterr().err
    assert 'cannot read config' in err and bad in err and 'Traceback' not in err


# ----------------------------------------------------------------------------- real data

DATA_ROOT = os.environ.get('MS_RCNN_DATA', osp.join(REPO_ROOT, '..', 'shared', 'data'))


@pytest.mark.parametrize('split', ['train', 'val'])
def test_real_coco_person_has_no_errors(split):
    ann_file = osp.join(DATA_ROOT, 'coco_person', 'annotations', f'instances_{split}.json')
    img_dir = osp.join(DATA_ROOT, 'coco_person', 'images', split)
    if not (osp.isfile(ann_file) and osp.isdir(img_dir)):
        pytest.skip(f'coco_person {split} split not found under {DATA_ROOT} (set MS_RCNN_DATA)')
    ann = cd.load_annotation_file(ann_file)
    problems = cd.check_coco(ann, img_dir)
    assert [str(p) for p in problems if p.severity == 'error'] == []
    assert len(ann['images']) > 0 and len(ann['annotations']) > 0


def test_a_flat_polygon_list_is_one_problem_that_says_so(tmp_path):
    """``[x1, y1, ...]`` instead of ``[[x1, y1, ...]]``: one problem, not one per number."""
    problems = run_case(tmp_path, lambda a, d: _set(a['annotations'][0], 'segmentation',
                                                    square(5, 5, 10)))
    assert len(problems) == 1
    assert 'one flat list of 8 numbers; COCO polygons are a list of lists' in problems[0].message
