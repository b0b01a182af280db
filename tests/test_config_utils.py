"""Command-line overrides shared by our tools (ms_rcnn.utils.config)."""
import os.path as osp

import pytest

from ms_rcnn.testing import REPO_ROOT
from ms_rcnn.utils.config import load_config

BALLOON = osp.join(REPO_ROOT, 'configs', 'small_data', 'ms-rcnn_r18_fpn_balloon.py')


def data_paths(cfg):
    """Every dataset's data_root and every evaluator's ann_file."""
    roots = [cfg[f'{split}_dataloader'].dataset.data_root for split in ('train', 'val', 'test')]
    files = [cfg[f'{split}_evaluator'].ann_file for split in ('val', 'test')]
    return roots, files


@pytest.mark.parametrize('how', ['--data-root', '--cfg-options data_root'])
def test_data_root_reaches_every_dataset_and_evaluator(tmp_path, how):
    root = str(tmp_path) + '/'
    if how == '--data-root':
        cfg = load_config(BALLOON, data_root=root)
    else:
        cfg = load_config(BALLOON, cfg_options={'data_root': root})
    roots, files = data_paths(cfg)
    assert roots == [root] * 3
    assert files == [root + 'annotations/instances_val.json'] * 2


def test_data_root_flag_wins_over_cfg_options(tmp_path):
    (tmp_path / 'a').mkdir()
    (tmp_path / 'b').mkdir()
    cfg = load_config(BALLOON, cfg_options={'data_root': str(tmp_path / 'a')},
                      data_root=str(tmp_path / 'b'))
    assert data_paths(cfg)[0] == [str(tmp_path / 'b')] * 3
    assert cfg.data_root == str(tmp_path / 'b')


def test_other_overrides_given_with_the_data_root_still_win(tmp_path):
    root = str(tmp_path) + '/'
    cfg = load_config(BALLOON, cfg_options={
        'data_root': root, 'val_evaluator.ann_file': root + 'annotations/custom_val.json',
        'test_dataloader.dataset.data_root': '/elsewhere/'})
    assert cfg.val_evaluator.ann_file == root + 'annotations/custom_val.json'
    assert cfg.test_dataloader.dataset.data_root == '/elsewhere/'
    assert cfg.train_dataloader.dataset.data_root == root


def test_missing_data_root_from_cfg_options_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere'):
        load_config(BALLOON, cfg_options={'data_root': str(tmp_path / 'nowhere')})
