"""Command-line overrides shared by our tools (ms_rcnn.utils.config)."""
import os.path as osp
import re

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


@pytest.mark.parametrize('text, read_as', [('2024', "int 2024"),
                                           ('toy,copy', "list ['toy', 'copy']")])
def test_a_data_root_that_cfg_options_reads_as_no_path_is_named(tmp_path, text, read_as):
    """mmengine's DictAction reads data_root=2024 as a number (os.path.isdir(2024) then tests a
    file descriptor) and data_root=a,b as a list (a TypeError deep in os.stat)."""
    import argparse

    from mmengine.config import DictAction

    from ms_rcnn.utils.config import ConfigError
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    options = parser.parse_args(['--cfg-options', f'data_root={text}']).cfg_options
    with pytest.raises(ConfigError, match=re.escape(
            f'--cfg-options data_root was read as {read_as}, not a path: give the directory '
            f'with --data-root instead')):
        load_config(BALLOON, cfg_options=options)


def test_data_root_reaches_datasets_inside_wrappers(tmp_path):
    """ConcatDataset's children and a RepeatDataset's inner dataset get the new root too."""
    child = tmp_path / 'concat.py'
    child.write_text(
        f"_base_ = {BALLOON!r}\n"
        "_inner = dict(type='ms_rcnn.CheckedCocoDataset', data_root='old/', ann_file='a.json',\n"
        "              metainfo=dict(classes=('balloon', )))\n"
        "train_dataloader = dict(dataset=dict(_delete_=True, type='ConcatDataset', datasets=[\n"
        "    _inner, dict(type='RepeatDataset', times=2, dataset=dict(_inner, "
        "ann_file='b.json'))]))\n")
    root = str(tmp_path / 'new') + '/'
    (tmp_path / 'new').mkdir()
    for cfg in (load_config(str(child), data_root=root),
                load_config(str(child), cfg_options={'data_root': root})):
        first, repeat = cfg.train_dataloader.dataset.datasets
        assert first.data_root == root and repeat.dataset.data_root == root
        assert 'data_root' not in repeat  # a wrapper gets no data_root it would not take


def test_torchvision_weights_are_found_where_a_model_loads_them():
    from ms_rcnn.utils.config import torchvision_weights
    model = dict(backbone=dict(init_cfg=dict(type='Pretrained',
                                             checkpoint='torchvision://resnet50')),
                 neck=[dict(init_cfg=dict(checkpoint='open-mmlab://x')),
                       dict(pretrained='torchvision://vgg16', name='torchvision://not_weights'),
                       dict(init_cfg=dict(checkpoint='modelzoo://resnet18'))])
    assert torchvision_weights(model) == [
        ('model.backbone.init_cfg.checkpoint', 'torchvision://resnet50'),
        ('model.neck[1].pretrained', 'torchvision://vgg16'),
        ('model.neck[2].init_cfg.checkpoint', 'modelzoo://resnet18')]


def test_training_refuses_torchvision_weights_without_torchvision(monkeypatch):
    import sys
    from mmengine.config import Config
    from ms_rcnn.utils.config import check_pretrained_weights_loadable
    r50 = osp.join(REPO_ROOT, 'configs', 'ms_rcnn', 'ms-rcnn_r50_fpn_1x_coco.py')
    monkeypatch.setitem(sys.modules, 'torchvision', None)  # import torchvision fails
    with pytest.raises(ImportError) as info:
        check_pretrained_weights_loadable(Config.fromfile(r50), r50)
    message = str(info.value)
    assert message.startswith(f'{r50}: model.backbone.init_cfg.checkpoint=torchvision://'
                              'resnet50 loads ImageNet weights through torchvision')
    assert message.endswith('--cfg-options model.backbone.init_cfg=None')
    check_pretrained_weights_loadable(Config.fromfile(BALLOON), BALLOON)  # from scratch: fine
    old_style = Config(dict(model=dict(pretrained='torchvision://resnet50')))
    with pytest.raises(ImportError, match=r'--cfg-options model\.pretrained=None$'):
        check_pretrained_weights_loadable(old_style, 'old.py')


def readme_child_config():
    """The child-config example of README.md's Usage section."""
    with open(osp.join(REPO_ROOT, 'README.md'), encoding='utf-8') as f:
        blocks = f.read().split('```python\n')[1:]
    (block, ) = [b.split('```')[0] for b in blocks if "_base_ = 'ms_rcnn::" in b]
    return block


def test_the_readme_child_config_sets_every_path_of_the_users_data(tmp_path):
    from mmengine.config import Config
    path = tmp_path / 'my_config.py'
    path.write_text(readme_child_config())
    cfg = Config.fromfile(str(path))
    assert cfg.model.roi_head.mask_iou_head.num_classes == 3
    for split, name in (('train', 'train'), ('val', 'val'), ('test', 'val')):
        dataset = cfg[f'{split}_dataloader'].dataset
        assert dataset.type == 'ms_rcnn.CheckedCocoDataset'
        assert (dataset.data_root, dataset.ann_file, dataset.data_prefix.img) == (
            'data/pets/', f'annotations/{name}.json', f'images/{name}/')
        assert dataset.metainfo.classes == ('cat', 'dog', 'bird')
    for split in ('val', 'test'):
        assert cfg[f'{split}_evaluator'].type == 'ms_rcnn.MaskScoringCocoMetric'
        assert cfg[f'{split}_evaluator'].ann_file == 'data/pets/annotations/val.json'


@pytest.mark.parametrize('options, says', [
    (dict(**{'model.roi_head.mask_iou_head.num_classes': 2}),
     'model.roi_head.bbox_head.num_classes: 1; model.roi_head.mask_head.num_classes: 1; '
     'model.roi_head.mask_iou_head.num_classes: 2; '
     "train_dataloader.dataset classes ('balloon',): 1"),
    (dict(**{'train_dataloader.dataset.metainfo.classes': ('balloon', 'kite')}),
     "train_dataloader.dataset classes ('balloon', 'kite'): 2; "
     "val_dataloader.dataset classes ('balloon',): 1"),
])
def test_heads_and_datasets_that_disagree_on_classes_are_named(options, says):
    from ms_rcnn.utils.config import ConfigError
    with pytest.raises(ConfigError, match='the number of classes differs: ') as info:
        load_config(BALLOON, options)
    assert says in str(info.value)


def test_classes_written_as_a_string_are_refused():
    from ms_rcnn.utils.config import ConfigError
    with pytest.raises(ConfigError, match=r"metainfo.classes is the string 'balloon', not a "
                                          r"tuple of names: write \('balloon',\)"):
        load_config(BALLOON, {'train_dataloader.dataset.metainfo.classes': 'balloon'})


@pytest.mark.parametrize('config', sorted(
    osp.relpath(p, osp.join(REPO_ROOT, 'configs'))
    for p in __import__('glob').glob(osp.join(REPO_ROOT, 'configs', '*', '*.py'))))
def test_every_shipped_config_agrees_on_its_classes(config):
    """Those without metainfo take their dataset type's classes (COCO's 80)."""
    from ms_rcnn.utils.config import check_num_classes
    cfg = load_config(osp.join(REPO_ROOT, 'configs', config))
    check_num_classes(cfg)
    counts = {cfg.model.roi_head.bbox_head.num_classes, cfg.model.roi_head.mask_head.num_classes}
    assert len(counts) == 1


def test_dataset_types_without_fixed_classes_are_not_judged():
    """mmdet's V3DetDataset has METAINFO classes None; non-COCO types are not ours to judge."""
    from ms_rcnn.utils.config import dataset_classes
    assert dataset_classes(dict(type='V3DetDataset', ann_file='a.json')) is None
    assert dataset_classes(dict(type='MOTChallengeDataset', ann_file='a.json')) is None
    assert dataset_classes(dict(type='NoSuchDataset', ann_file='a.json')) is None
    assert len(dataset_classes(dict(type='CocoDataset', ann_file='a.json'))) == 80
    assert dataset_classes(dict(type='ms_rcnn.CheckedCocoDataset',
                                metainfo=dict(classes=('a', 'b'), palette=[(0, 0, 0)] * 2))) \
        == ('a', 'b')


def test_concat_dataset_labels_by_its_first_dataset(tmp_path):
    """ConcatDataset takes its first dataset's metainfo (mmengine; with ignore_keys the others
    may differ), so only that one must agree with the heads."""
    child = tmp_path / 'concat.py'
    child.write_text(
        f"_base_ = {BALLOON!r}\n"
        "_one = dict(type='ms_rcnn.CheckedCocoDataset', ann_file='a.json',\n"
        "            metainfo=dict(classes=('balloon', )))\n"
        "train_dataloader = dict(dataset=dict(_delete_=True, type='ConcatDataset',\n"
        "    ignore_keys=['classes', 'palette'], datasets=[_one, dict(_one, ann_file='b.json',\n"
        "    metainfo=dict(classes=('balloon', 'kite')))]))\n")
    load_config(str(child))
    child.write_text(child.read_text().replace("datasets=[_one, dict(", "datasets=[dict(")
                     .replace("'kite')))]", "'kite'))), _one]"))
    from ms_rcnn.utils.config import ConfigError
    with pytest.raises(ConfigError, match=r"classes \('balloon', 'kite'\): 2"):
        load_config(str(child))


def test_shorten_training_takes_a_single_scheduler_and_other_epoch_schedules(tmp_path):
    from ms_rcnn.utils.config import shorten_training
    cfg = load_config(BALLOON)
    cfg.param_scheduler = dict(type='CosineAnnealingLR', by_epoch=True, T_max=12, begin=0,
                               end=12)
    shorten_training(cfg, 40)
    assert cfg.param_scheduler == [dict(type='CosineAnnealingLR', by_epoch=False, T_max=40,
                                        begin=0, end=40)]
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=40, val_interval=40)


def test_shorten_training_keeps_a_warm_up_and_a_milestone_in_very_short_runs():
    from ms_rcnn.utils.config import is_warmup, shorten_training
    cfg = load_config(BALLOON)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
        dict(type='MultiStepLR', by_epoch=True, begin=0, end=12, milestones=[8, 11])]
    shorten_training(cfg, 1)
    assert cfg.param_scheduler[0].end == 1 and cfg.param_scheduler[1].milestones == [1]
    # a linear schedule that starts later is a main schedule, not a warm-up
    assert not is_warmup(dict(type='LinearLR', by_epoch=False, begin=500, end=1000))
    assert is_warmup(dict(type='LinearLR', by_epoch=False, begin=0, end=500))


def test_shorten_training_reads_scheduler_types_with_a_scope():
    from ms_rcnn.utils.config import shorten_training
    cfg = load_config(BALLOON)
    cfg.param_scheduler = [
        dict(type='mmengine.LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
        dict(type='mmengine.MultiStepLR', by_epoch=True, begin=0, end=12, milestones=[8, 11])]
    shorten_training(cfg, 100)
    assert cfg.param_scheduler == [
        dict(type='mmengine.LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=20),
        dict(type='mmengine.MultiStepLR', by_epoch=False, begin=0, end=100, milestones=[80])]


def test_shorten_training_spreads_main_schedules_and_keeps_warm_ups_short():
    """A cosine schedule converted to iterations (convert_to_iter_based) crashed mmengine's
    build once made iteration-based; an iteration-based cosine was taken for a warm-up."""
    import torch
    from mmengine.optim.scheduler import CosineAnnealingLR, LinearLR
    from mmengine.registry import PARAM_SCHEDULERS

    from ms_rcnn.utils.config import shorten_training
    cfg = load_config(BALLOON)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
        dict(type='CosineAnnealingLR', by_epoch=True, convert_to_iter_based=True, begin=1,
             end=12, T_max=11, eta_min=0.0)]
    shorten_training(cfg, 100)
    assert cfg.param_scheduler == [
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=20),
        dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=100, T_max=100,
             eta_min=0.0)]
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False, begin=0, end=90000,
                                T_max=90000)]
    shorten_training(cfg, 100)
    assert cfg.param_scheduler == [dict(type='CosineAnnealingLR', by_epoch=False, begin=0,
                                        end=100, T_max=100)]
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    built = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer)) for s in cfg.param_scheduler]
    assert isinstance(built[0], CosineAnnealingLR) and not isinstance(built[0], LinearLR)
    for _ in range(100):
        optimizer.step()
        built[0].step()
    # annealed over the whole run: the last step's value, (1 + cos(pi * 99 / 100)) / 2
    assert optimizer.param_groups[0]['lr'] == pytest.approx(2.467e-4, rel=1e-3)
