"""Training survives augmentations and data that empty an instance's mask."""
import json
import math
import os
import os.path as osp
import subprocess
import sys

from ms_rcnn.testing import REPO_ROOT

from .conftest import TOY_CONFIG

# Strong geometric augmentation (mmdet's RandAugment with large translations/rotations) and a
# small random crop: instances end up with empty or tiny masks (mmdet issue #11527 crashed
# mmdet's MS R-CNN on these). Measured on the toy data: 10 of 31 sampled instances came out
# of this pipeline with an empty mask, and 2 of the 8 instances that reached the model in the
# test's run (seed 3); the test checks that some still do.
PIPELINE = """[
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandAugment', aug_num=2,
         aug_space=[[dict(type='TranslateX', prob=1.0, min_mag=0.3, max_mag=0.5)],
                    [dict(type='Rotate', prob=1.0, min_mag=20.0, max_mag=30.0)],
                    [dict(type='ShearY', prob=1.0, min_mag=20.0, max_mag=30.0)]]),
    dict(type='RandomCrop', crop_size=(48, 48), allow_negative_crop=True),
    dict(type='PackDetInputs')]"""

SCRIPT = f"""
import json
import math
import sys
import ms_rcnn
from ms_rcnn.utils.config import load_config
from mmengine.runner import Runner
cfg = load_config({TOY_CONFIG!r}, data_root=sys.argv[1], work_dir=sys.argv[2])
cfg.train_dataloader.dataset.pipeline = {PIPELINE}
cfg.train_dataloader.dataset.filter_cfg = dict(filter_empty_gt=False, min_size=0)
cfg.train_cfg.max_epochs = 3
cfg.train_cfg.val_interval = 100
cfg.randomness = dict(seed=3)
runner = Runner.from_cfg(cfg)
model = runner.model
empty, total = [], []


def counting_loss(inputs, data_samples, _loss=model.loss):
    areas = [s.gt_instances.masks.areas for s in data_samples]
    empty.append(sum(int((a == 0).sum()) for a in areas))
    total.append(sum(len(a) for a in areas))
    return _loss(inputs, data_samples)


model.loss = counting_loss  # what the model trains on, after the whole pipeline
runner.train()
print('EMPTY', sum(empty), 'OF', sum(total))
logs = runner.message_hub.log_scalars
losses = logs['train/loss'].data[0]
print('LOSSES', json.dumps([float(v) for v in losses]))
assert all(math.isfinite(v) for v in losses), losses
"""


def test_training_survives_augmentations_that_empty_masks(toy_root, tmp_path):
    proc = subprocess.run([sys.executable, '-c', SCRIPT, toy_root, str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith('LOSSES')][0]
    losses = json.loads(line[len('LOSSES '):])
    assert len(losses) == 6  # 3 epochs x 2 iterations
    [counts] = [l.split() for l in proc.stdout.splitlines() if l.startswith('EMPTY')]
    assert int(counts[1]) > 0, 'the premise: some instances reach the model with empty masks'
    assert all(math.isfinite(v) and v > 0 for v in losses)
    assert osp.isfile(tmp_path / 'epoch_3.pth')


def broken_toy(root):
    """The toy data with one case of each in-training policy (docs/bad_data.md)."""
    import cv2
    import numpy as np

    from ms_rcnn.testing import make_toy_coco
    files = make_toy_coco(root)
    with open(files['train']) as f:
        data = json.load(f)
    anns = data['annotations']
    anns[0]['segmentation'] = [[1, 2, 3, 4]]            # dropped: a 2-point polygon
    anns[1]['category_id'] = 42                          # dropped: unknown category
    anns[2]['bbox'][2] += 500                            # clipped: box past the image
    del anns[3]['area']                                  # filled: missing area
    anns[4]['bbox'][1] = float('nan')                    # dropped: NaN (json writes NaN)
    with open(files['train'], 'w') as f:
        json.dump(data, f)
    img_dir = osp.join(root, 'images', 'train')
    with open(osp.join(img_dir, 'train_0003.png'), 'wb') as f:
        f.write(b'truncated')                            # skipped: cannot be decoded
    img = cv2.imread(osp.join(img_dir, 'train_0002.png'))
    cv2.imwrite(osp.join(img_dir, 'train_0002.png'),     # skipped: stored rotated
                np.ascontiguousarray(img.transpose(1, 0, 2)))
    return anns


def _scalars(work_dir):
    import glob
    [path] = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_training_on_broken_data_trains_on_and_names_what_it_skipped(tmp_path):
    root, work_dir = str(tmp_path / 'data'), str(tmp_path / 'work')
    anns = broken_toy(root)
    proc = subprocess.run([sys.executable, 'tools/train.py', TOY_CONFIG, '--data-root', root,
                           '--work-dir', work_dir], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for ann_id, kind in ((anns[0]['id'], 'polygon_too_few_points'),
                         (anns[1]['id'], 'unknown_category_id'),
                         (anns[2]['id'], 'bbox_out_of_bounds'),
                         (anns[3]['id'], 'area_invalid'),
                         (anns[4]['id'], 'nonfinite_coordinates')):
        assert f'{kind}: annotation {ann_id}:' in out, kind
    assert 'skipping an image in training' in out
    assert 'train_0003.png: cannot be read' in out
    assert 'train_0002.png: image is 128x96 (HxW) but the annotation file says 96x128' in out
    losses = [row['loss'] for row in _scalars(work_dir) if 'loss' in row]
    assert len(losses) == 4 and all(math.isfinite(v) and v > 0 for v in losses)
    assert osp.isfile(osp.join(work_dir, 'epoch_2.pth'))


def test_a_missing_image_stops_training_before_it_starts(tmp_path):
    from ms_rcnn.testing import make_toy_coco
    root, work_dir = str(tmp_path / 'data'), str(tmp_path / 'work')
    make_toy_coco(root)
    os.remove(osp.join(root, 'images', 'train', 'train_0003.png'))
    proc = subprocess.run([sys.executable, 'tools/train.py', TOY_CONFIG, '--data-root', root,
                           '--work-dir', work_dir], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr  # one line, not a traceback
    assert f"error: {osp.join(root, 'annotations', 'instances_train.json')}: 1 problem" \
        in proc.stderr
    assert 'image_missing: image file not found:' in proc.stderr
    assert osp.join(root, 'images', 'train', 'train_0003.png') in proc.stderr
    assert not any(name.endswith('.pth') for name in os.listdir(work_dir))
