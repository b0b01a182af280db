"""tools/dataset_converters/balloon2coco.py on tiny VIA files built here, and on the real data."""
import importlib.util
import json
import os
import os.path as osp
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from ms_rcnn.testing import REPO_ROOT

SCRIPT = osp.join(REPO_ROOT, 'tools', 'dataset_converters', 'balloon2coco.py')
DATA_ROOT = os.environ.get('MS_RCNN_DATA', osp.join(REPO_ROOT, '..', 'shared', 'data'))
BALLOON_ROOT = osp.join(DATA_ROOT, 'balloon')


def _load_module():
    spec = importlib.util.spec_from_file_location('balloon2coco', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


b2c = _load_module()

TRIANGLE = {'name': 'polygon', 'all_points_x': [2, 10, 2], 'all_points_y': [3, 3, 9]}
SQUARE = {'name': 'polygon', 'all_points_x': [12, 18, 18, 12, 12],  # closed, as VIA saves
          'all_points_y': [5, 5, 11, 11, 5]}


def region(shape):
    return {'shape_attributes': shape, 'region_attributes': {}}


def write_image(path, height, width):
    cv2.imwrite(str(path), np.full((height, width, 3), 127, np.uint8))


def write_via(split_dir, entries):
    """Write ``split_dir/via_region_data.json``; entries: (filename, regions) pairs."""
    via = {f'{name}123': {'fileref': '', 'size': 123, 'filename': name, 'base64_img_data': '',
                          'file_attributes': {}, 'regions': regions}
           for name, regions in entries}
    path = split_dir / 'via_region_data.json'
    path.write_text(json.dumps(via))
    return str(path)


@pytest.fixture
def balloon(tmp_path):
    """A two-split VIA dataset.

    train: a 20-high, 30-wide image with a triangle and a square (regions as a dict) and a
    10-high, 8-wide image without regions; val: one 16x16 image with a list of regions.
    """
    root = tmp_path / 'balloon'
    for split in ('train', 'val'):
        (root / split).mkdir(parents=True)
    write_image(root / 'train' / 'a.png', 20, 30)
    write_image(root / 'train' / 'b.jpg', 10, 8)
    write_via(root / 'train', [('a.png', {'0': region(TRIANGLE), '1': region(SQUARE)}),
                               ('b.jpg', {})])
    write_image(root / 'val' / 'c.png', 16, 16)
    write_via(root / 'val', [('c.png', [region(TRIANGLE)])])
    return root


def convert(root, split='train'):
    split_dir = osp.join(str(root), split)
    return b2c.convert_split(osp.join(split_dir, 'via_region_data.json'), split_dir)


def test_convert_split_exact_values(balloon):
    coco = convert(balloon)
    assert coco['categories'] == [{'id': 1, 'name': 'balloon', 'supercategory': 'balloon'}]
    assert coco['images'] == [
        {'id': 1, 'file_name': 'a.png', 'height': 20, 'width': 30},
        {'id': 2, 'file_name': 'b.jpg', 'height': 10, 'width': 8},
    ]
    tri, sq = coco['annotations']
    assert tri == {'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0,
                   'segmentation': [[2, 3, 10, 3, 2, 9]], 'bbox': [2, 3, 8, 6], 'area': 24}
    assert sq == {'id': 2, 'image_id': 1, 'category_id': 1, 'iscrowd': 0,
                  'segmentation': [[12, 5, 18, 5, 18, 11, 12, 11, 12, 5]],
                  'bbox': [12, 5, 6, 6], 'area': 36}


def test_regions_as_list_and_ids_restart_per_split(balloon):
    coco = convert(balloon, 'val')
    assert coco['images'] == [{'id': 1, 'file_name': 'c.png', 'height': 16, 'width': 16}]
    assert [(a['id'], a['image_id'], a['bbox'], a['area']) for a in coco['annotations']] == [
        (1, 1, [2, 3, 8, 6], 24)]


def test_area_is_the_shoelace_area_and_matches_pycocotools():
    from pycocotools import mask as mask_utils
    pts = [(3.0, 2.0), (25.0, 6.0), (17.0, 18.0), (6.0, 14.0)]
    # 3*6 - 25*2 + 25*18 - 17*6 + 17*14 - 6*18 + 6*2 - 3*14 = 416
    assert b2c.polygon_area(pts) == 208
    assert b2c.polygon_area(pts[::-1]) == 208  # orientation does not matter
    assert b2c.polygon_area(pts + pts[:1]) == 208  # nor a repeated closing point
    rle = mask_utils.merge(mask_utils.frPyObjects([[c for p in pts for c in p]], 40, 40))
    assert mask_utils.area(rle) == 208
    assert b2c.polygon_bbox(pts) == [3, 2, 22, 16]


def test_non_polygon_region_is_skipped_with_warning(balloon):
    rect = {'name': 'rect', 'x': 1, 'y': 1, 'width': 4, 'height': 4}
    write_via(balloon / 'train', [('a.png', [region(rect), region(SQUARE)])])
    with pytest.warns(b2c.ConversionWarning, match=r"entry 'a\.png123', region 0: shape 'rect'"):
        coco = convert(balloon)
    assert [(a['id'], a['bbox']) for a in coco['annotations']] == [(1, [12, 5, 6, 6])]


def test_zero_area_polygon_is_skipped_with_warning(balloon):
    line = {'name': 'polygon', 'all_points_x': [1, 5, 9], 'all_points_y': [1, 5, 9]}
    write_via(balloon / 'train', [('a.png', [region(line), region(TRIANGLE)])])
    with pytest.warns(b2c.ConversionWarning, match='region 0: polygon has zero area'):
        coco = convert(balloon)
    assert [a['area'] for a in coco['annotations']] == [24]


def test_points_outside_the_image_are_clipped_with_warning(balloon):
    shape = {'name': 'polygon', 'all_points_x': [-4, 34, 10], 'all_points_y': [2, 2, 25]}
    write_via(balloon / 'train', [('a.png', [region(shape)])])
    with pytest.warns(b2c.ConversionWarning, match=r'outside the image \(width 30, height 20\)'):
        coco = convert(balloon)
    ann, = coco['annotations']
    assert ann['segmentation'] == [[0, 2, 30, 2, 10, 20]]
    assert ann['bbox'] == [0, 2, 30, 18]
    assert ann['area'] == 270


def test_missing_image_is_an_error_naming_the_file(balloon):
    write_via(balloon / 'train', [('a.png', [region(TRIANGLE)]), ('gone.jpg', [])])
    with pytest.raises(b2c.ConversionError, match=r"entry 'gone\.jpg123'.*image file not "
                       r'found: .*gone\.jpg'):
        convert(balloon)


def test_missing_via_json_is_an_error(tmp_path):
    with pytest.raises(b2c.ConversionError, match='VIA annotation file not found: .*nope.json'):
        b2c.convert_split(str(tmp_path / 'nope.json'), str(tmp_path))


@pytest.mark.parametrize('shape, message', [
    ({'all_points_x': [1, 5], 'all_points_y': [1, 5]}, 'polygon has 2 points, at least 3'),
    ({'all_points_x': [1, 5, 9], 'all_points_y': [1, 5]}, 'polygon has 3 x but 2 y'),
    ({'all_points_x': [1, 5, None], 'all_points_y': [1, 5, 2]}, 'not a finite number: None'),
    ({'all_points_x': [1, 5, 9]}, 'needs lists'),
])
def test_malformed_polygon_is_an_error_naming_the_entry(balloon, shape, message):
    write_via(balloon / 'train', [('a.png', [region(TRIANGLE), region(dict(shape,
                                                                          name='polygon'))])])
    with pytest.raises(b2c.ConversionError) as err:
        convert(balloon)
    assert "via_region_data.json, entry 'a.png123', region 1: " in str(err.value)
    assert message in str(err.value)


def test_duplicate_or_escaping_filename_is_an_error(balloon):
    write_image(balloon / 'outside.png', 4, 4)
    write_via(balloon / 'train', [('../outside.png', [])])
    with pytest.raises(b2c.ConversionError, match='must be relative to'):
        convert(balloon)
    write_via(balloon / 'train', [('a.png', []), ('./a.png', [])])
    with pytest.raises(b2c.ConversionError, match="already listed by entry 'a.png123'"):
        convert(balloon)


def test_exif_rotated_image_gets_the_decoded_size(balloon):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: a stored 30 wide x 20 high image decodes 20 x 30
    Image.new('RGB', (30, 20)).save(balloon / 'train' / 'r.jpg', exif=exif)
    write_via(balloon / 'train', [('r.jpg', [])])
    img, = convert(balloon)['images']
    assert (img['height'], img['width']) == (30, 20)
    assert cv2.imread(str(balloon / 'train' / 'r.jpg')).shape[:2] == (30, 20)


def list_files(root):
    return sorted(osp.relpath(osp.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_main_writes_coco_files_outside_the_root(balloon, tmp_path, capsys):
    before = list_files(balloon)
    out_dir = tmp_path / 'out'
    assert b2c.main([str(balloon), str(out_dir), '--splits', 'train', 'val']) == 0
    assert list_files(balloon) == before
    assert list_files(out_dir) == ['annotations/instances_train.json',
                                   'annotations/instances_val.json']
    for split in ('train', 'val'):
        with open(out_dir / 'annotations' / f'instances_{split}.json') as f:
            assert json.load(f) == convert(balloon, split)
    out = capsys.readouterr().out
    assert 'train: 2 images, 2 instances' in out and 'val: 1 images, 1 instances' in out


def test_bad_split_writes_nothing(balloon, tmp_path, capsys):
    (balloon / 'val' / 'c.png').unlink()
    out_dir = tmp_path / 'out'
    assert b2c.main([str(balloon), str(out_dir)]) == 1  # train is fine, val is not
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'image file not found' in err and 'c.png' in err
    assert not (out_dir / 'annotations').exists()


def test_an_image_dir_in_the_way_writes_nothing(balloon, tmp_path, capsys):
    out_dir = tmp_path / 'out'
    (out_dir / 'images' / 'val').mkdir(parents=True)  # a real directory where a link goes
    assert b2c.main([str(balloon), str(out_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: ') and 'images/val exists and is not a link' in err
    assert list_files(out_dir) == [] and not (out_dir / 'annotations').exists()
    assert not (out_dir / 'images' / 'train').exists()


@pytest.mark.parametrize('in_the_way', ['broken images link', 'annotation file is a dir'])
def test_other_things_in_the_way_write_nothing(balloon, tmp_path, capsys, in_the_way):
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    if in_the_way == 'broken images link':
        (out_dir / 'images').symlink_to(tmp_path / 'gone')
        expected = f'{out_dir}/images exists and is not a directory'
    else:
        (out_dir / 'annotations' / 'instances_val.json').mkdir(parents=True)
        expected = f'{out_dir}/annotations/instances_val.json exists and is not a file'
    assert b2c.main([str(balloon), str(out_dir)]) == 1
    assert capsys.readouterr().err.startswith(f'error: {expected}')
    assert not (out_dir / 'annotations' / 'instances_train.json').exists()
    assert not osp.lexists(out_dir / 'images' / 'train')


def test_an_os_error_without_a_file_name_is_still_a_one_line_error(balloon, tmp_path, capsys,
                                                                   monkeypatch):
    def full_disk(obj, path):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(b2c, 'dump_json_atomic', full_disk)
    assert b2c.main([str(balloon), str(tmp_path / 'out')]) == 1
    assert capsys.readouterr().err == 'error: No space left on device\n'


def test_an_out_dir_that_is_a_file_is_an_error_not_a_traceback(balloon, tmp_path, capsys):
    out_file = tmp_path / 'out'
    out_file.write_text('mine')
    assert b2c.main([str(balloon), str(out_file)]) == 1
    assert capsys.readouterr().err == f'error: {out_file} exists and is not a directory; ' \
                                      'choose another OUT_DIR\n'
    assert out_file.read_text() == 'mine'


@pytest.mark.parametrize('inside', ['.', 'train', 'coco/out'])
def test_out_dir_inside_the_root_is_refused(balloon, capsys, inside):
    before = list_files(balloon)
    out_dir = osp.join(str(balloon), inside)
    assert b2c.main([str(balloon), out_dir]) == 1
    assert 'refusing to write' in capsys.readouterr().err
    assert list_files(balloon) == before and not osp.exists(osp.join(out_dir, 'annotations'))


def test_out_dir_reaching_the_root_through_a_link_is_refused(balloon, tmp_path):
    link = tmp_path / 'link'
    link.symlink_to(balloon)
    with pytest.raises(b2c.ConversionError, match='refusing to write'):
        b2c.convert(str(balloon), str(link / 'out'), ['train'])
    (tmp_path / 'out').mkdir()
    (tmp_path / 'out' / 'annotations').symlink_to(balloon)
    with pytest.raises(b2c.ConversionError, match='refusing to write'):
        b2c.convert(str(balloon), str(tmp_path / 'out'), ['train'])


def test_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / 'instances_train.json'
    path.write_text('{"old": true}')
    with pytest.raises(TypeError):
        b2c.dump_json_atomic({'images': [1, 2, 3], 'bad': object()}, str(path))
    assert json.loads(path.read_text()) == {'old': True}
    assert os.listdir(tmp_path) == ['instances_train.json']
    b2c.dump_json_atomic({'new': [1]}, str(path))
    assert json.loads(path.read_text()) == {'new': [1]}
    assert os.listdir(tmp_path) == ['instances_train.json']
    assert os.stat(path).st_mode & 0o644 == 0o644  # readable by others, not mkstemp's 0600


def test_command_line(balloon, tmp_path):
    ok = subprocess.run([sys.executable, SCRIPT, str(balloon), str(tmp_path / 'out'),
                         '--splits', 'val'], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert osp.isfile(tmp_path / 'out' / 'annotations' / 'instances_val.json')
    refused = subprocess.run([sys.executable, SCRIPT, str(balloon), str(balloon / 'out')],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and 'refusing to write' in refused.stderr


def test_real_balloon_data(tmp_path):
    if not osp.isdir(BALLOON_ROOT):
        pytest.skip(f'Balloon data not found at {BALLOON_ROOT} (set MS_RCNN_DATA)')
    out_dir = tmp_path / 'out'
    assert b2c.main([BALLOON_ROOT, str(out_dir)]) == 0
    expected = {'train': (61, 255), 'val': (13, 50)}
    for split, (num_images, num_anns) in expected.items():
        ann_file = str(out_dir / 'annotations' / f'instances_{split}.json')
        with open(ann_file) as f:
            coco = json.load(f)
        assert (len(coco['images']), len(coco['annotations'])) == (num_images, num_anns)
        assert [a['id'] for a in coco['annotations']] == list(range(1, num_anns + 1))
        images = {img['id']: img for img in coco['images']}
        assert sorted(images) == list(range(1, num_images + 1))
        for img in coco['images']:
            assert osp.isfile(osp.join(BALLOON_ROOT, split, img['file_name']))
        for ann in coco['annotations']:
            img = images[ann['image_id']]
            x, y, w, h = ann['bbox']
            assert 0 <= x and 0 <= y and w > 0 and h > 0
            assert x + w <= img['width'] and y + h <= img['height'], (img, ann['bbox'])
            assert 0 < ann['area'] <= w * h
        # The config contract: data_root=BALLOON_ROOT, data_prefix=dict(img='<split>/').
        from mmdet.datasets import CocoDataset
        dataset = CocoDataset(ann_file=ann_file, data_root=BALLOON_ROOT,
                              data_prefix=dict(img=f'{split}/'),
                              metainfo=dict(classes=('balloon', )), pipeline=[])
        infos = [dataset.get_data_info(i) for i in range(len(dataset))]
        assert len(infos) == num_images
        assert all(osp.isfile(info['img_path']) for info in infos)
        assert sum(len(info['instances']) for info in infos) == num_anns
