"""The command-line tools and mim, run as a user runs them, on a synthetic dataset."""
import json
import os
import os.path as osp
import pickle
import re
import shutil
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from ms_rcnn.testing import REPO_ROOT

from .conftest import TOY_CONFIG

PY = sys.executable
MIM = osp.join(osp.dirname(sys.executable), 'mim')


def run(cmd, cwd=REPO_ROOT, env=None, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f'{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


@pytest.fixture(scope='module')
def trained(toy_root, tmp_path_factory):
    """Two epochs of training with tools/train.py."""
    work_dir = str(tmp_path_factory.mktemp('train'))
    run([PY, 'tools/train.py', TOY_CONFIG, '--data-root', toy_root, '--work-dir', work_dir])
    return work_dir


def test_train_writes_checkpoints_that_load_safely(trained):
    for epoch in (1, 2):
        ckpt = torch.load(osp.join(trained, f'epoch_{epoch}.pth'), map_location='cpu')
        assert ckpt['meta']['epoch'] == epoch
        assert any(k.startswith('roi_head.mask_iou_head.') for k in ckpt['state_dict'])
    with open(osp.join(trained, 'last_checkpoint')) as f:
        assert f.read().strip().endswith('epoch_2.pth')


def test_resume_continues_from_the_last_checkpoint(trained, toy_root, tmp_path):
    work_dir = str(tmp_path / 'resume')
    shutil.copytree(trained, work_dir)
    out = run([PY, 'tools/train.py', TOY_CONFIG, '--data-root', toy_root, '--work-dir',
               work_dir, '--resume', '--cfg-options', 'train_cfg.max_epochs=3'])
    assert 'resumed epoch: 2, iter: 4' in out
    assert 'Epoch(train) [3][2/2]' in out and 'Epoch(train) [1]' not in out
    assert torch.load(osp.join(work_dir, 'epoch_3.pth'))['meta']['iter'] == 6


def test_test_tool_evaluates_and_dumps_predictions(trained, toy_root, tmp_path):
    out_file = str(tmp_path / 'preds.pkl')
    run([PY, 'tools/test.py', TOY_CONFIG, osp.join(trained, 'epoch_2.pth'), '--data-root',
         toy_root, '--work-dir', str(tmp_path), '--out', out_file])
    with open(out_file, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 4
    assert sorted(p['img_id'] for p in preds) == [1, 2, 3, 4]
    for pred in preds:
        inst = pred['pred_instances']
        assert {'bbox_scores', 'mask_ious', 'scores', 'masks'} <= set(inst)
        # The dumped score is the mask score: classification score x predicted MaskIoU.
        torch.testing.assert_close(inst['scores'], inst['bbox_scores'] * inst['mask_ious'])
        assert bool(((inst['mask_ious'] >= 0) & (inst['mask_ious'] <= 1)).all())


@pytest.fixture
def without_mask_iou_head(trained, tmp_path):
    """The trained checkpoint less its MaskIoU head, as a Mask R-CNN checkpoint would be."""
    ckpt = torch.load(osp.join(trained, 'epoch_2.pth'), map_location='cpu')
    ckpt['state_dict'] = {k: v for k, v in ckpt['state_dict'].items()
                          if not k.startswith('roi_head.mask_iou_head.')}
    path = str(tmp_path / 'mask_rcnn.pth')
    torch.save(ckpt, path)
    return path


def test_test_tool_refuses_a_checkpoint_of_another_model(without_mask_iou_head, toy_root,
                                                         tmp_path):
    # A Mask R-CNN checkpoint (no MaskIoU head) tested with the MS R-CNN config would score
    # masks with a random head; mmengine alone only prints the missing keys.
    path = without_mask_iou_head
    proc = subprocess.run([PY, 'tools/test.py', TOY_CONFIG, path, '--data-root', toy_root,
                           '--work-dir', str(tmp_path)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert f'error: checkpoint {path} does not fit' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert 'roi_head.mask_iou_head.* (' in proc.stderr
    assert 'Evaluating' not in proc.stdout + proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a CPU-only machine')
def test_train_refuses_amp_without_a_gpu_before_building_anything(toy_root, tmp_path):
    proc = subprocess.run([PY, 'tools/train.py', TOY_CONFIG, '--data-root', toy_root,
                           '--work-dir', str(tmp_path), '--amp'],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and 'error: --amp needs a GPU' in proc.stderr
    assert not os.listdir(tmp_path)  # no log, no dumped config


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a CPU-only machine')
def test_train_refuses_a_mixed_precision_config_without_a_gpu(toy_root, tmp_path):
    """The AMP config itself, not only --amp: mmengine would stop with an assertion deep in
    building the optimizer wrapper."""
    config = 'configs/ms_rcnn/ms-rcnn_r50_fpn_amp-1x_coco.py'
    proc = subprocess.run([PY, 'tools/train.py', config, '--work-dir', str(tmp_path),
                           '--cfg-options', 'model.backbone.init_cfg=None'],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {config}: optim_wrapper.type='AmpOptimWrapper' (mixed precision) needs a GPU; "
        "it does not train on cpu: train a config without it here")
    assert not os.listdir(tmp_path)


def test_train_names_the_missing_torchvision_before_building_anything(tmp_path):
    try:
        import torchvision  # noqa: F401
        pytest.skip('torchvision is importable here: the ImageNet weights would be downloaded')
    except Exception:  # noqa: BLE001  missing or broken, as the check sees it
        pass
    proc = subprocess.run([PY, 'tools/train.py', 'configs/ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py',
                           '--work-dir', str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert 'error: configs/ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py: model.backbone.init_cfg.' \
           'checkpoint=torchvision://resnet50 loads ImageNet weights' in proc.stderr
    assert os.listdir(tmp_path) == []  # stopped before the runner made its log directory


def test_resume_refuses_a_checkpoint_of_another_model(without_mask_iou_head, toy_root,
                                                      tmp_path):
    path = without_mask_iou_head
    proc = subprocess.run([PY, 'tools/train.py', TOY_CONFIG, '--data-root', toy_root,
                           '--work-dir', str(tmp_path / 'wd'), '--resume', path],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    assert f'error: checkpoint {path} does not fit' in proc.stderr
    assert 'Traceback' not in proc.stderr


@pytest.mark.parametrize('name, reason', [('none.pth', 'does not exist'),
                                          ('wd', 'is a directory, not a checkpoint file')])
def test_test_tool_names_a_missing_checkpoint(toy_root, tmp_path, name, reason):
    (tmp_path / 'wd').mkdir()
    proc = subprocess.run([PY, 'tools/test.py', TOY_CONFIG, str(tmp_path / name)],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: checkpoint {tmp_path / name} {reason}"


@pytest.mark.parametrize('args, message', [
    (['configs/nope.py'], 'error: config configs/nope.py does not exist'),
    ([TOY_CONFIG, '--data-root', '/nowhere/data'], 'error: data root /nowhere/data is not a'),
    ([TOY_CONFIG, '--resume', '/nowhere/none.pth'],
     'error: --resume: checkpoint /nowhere/none.pth does not exist'),
    ([TOY_CONFIG, '--cfg-options', 'data_root=/tmp/'], 'error: cannot read annotation file '),
    ([TOY_CONFIG, '--cfg-options', 'data_root=/tmp/',
      'model.roi_head.mask_iou_head.type=ms_rcnn.MaskIoUHeadd'],
     "error: the config's type='ms_rcnn.MaskIoUHeadd' is not a registered model type "
     "(default scope 'mmdet'); did you mean 'ms_rcnn.MaskIoUHead'"),
])
def test_train_input_errors_are_one_line_before_anything_is_written(args, message, tmp_path):
    proc = subprocess.run([PY, 'tools/train.py', *args, '--work-dir', str(tmp_path / 'wd')],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert message in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
    if 'annotation file' not in message and 'type=' not in message:
        assert not osp.exists(tmp_path / 'wd')  # the runner (log directory) comes later


def test_relative_annotation_paths_name_the_directory_they_are_read_from(tmp_path,
                                                                         monkeypatch):
    from ms_rcnn.datasets.coco_checks import DatasetInputError, load_annotation_file
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetInputError, match=re.escape(
            f'ann.json (relative to the current directory {os.getcwd()}): No such file')):
        load_annotation_file('data/ann.json')
    with pytest.raises(DatasetInputError) as err:
        load_annotation_file(str(tmp_path / 'ann.json'))
    assert 'relative to the current directory' not in str(err.value)


def test_run_tool_turns_only_input_errors_into_one_line(monkeypatch):
    from ms_rcnn.datasets.bad_data_policy import BadDatasetError
    from ms_rcnn.utils.cli import TRACEBACK_ENV, run_tool

    def failing(error):
        def main(argv):
            raise error
        return main

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    for error in (FileNotFoundError('config a.py does not exist'),
                  BadDatasetError('a.json: 2 problems')):
        with pytest.raises(SystemExit) as stop:
            run_tool(failing(error))
        assert stop.value.code == f'error: {error}'
    with pytest.raises(ValueError, match='a bug'):  # not bad input: the traceback stays
        run_tool(failing(ValueError('a bug')))
    assert run_tool(lambda argv: argv, ['--x']) == ['--x']
    monkeypatch.setenv(TRACEBACK_ENV, '0')
    with pytest.raises(SystemExit):
        run_tool(failing(FileNotFoundError('config a.py does not exist')))
    monkeypatch.setenv(TRACEBACK_ENV, '1')
    with pytest.raises(FileNotFoundError):
        run_tool(failing(FileNotFoundError('config a.py does not exist')))


@pytest.mark.parametrize('written, suggested', [
    ('MaskIoUHeadd', "did you mean 'MaskIoUHead'"),                 # mmdet's, default scope
    ('ms_rcnn.MaskIoUHeadd', "did you mean 'ms_rcnn.MaskIoUHead'"),  # ours, with its scope
    ('NoSuchThingAtAll', None),
])
def test_a_misspelt_type_is_one_line_with_the_closest_names(monkeypatch, written, suggested):
    """mmengine raises a KeyError deep inside the build; the tools print one line instead."""
    import ms_rcnn  # noqa: F401  registers our modules
    from mmdet.registry import MODELS
    from mmengine.registry import DefaultScope

    from ms_rcnn.utils.cli import TRACEBACK_ENV, run_tool

    def main(argv):
        with DefaultScope.overwrite_default_scope('mmdet'):
            MODELS.build(dict(type=written))

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    with pytest.raises(SystemExit) as stop:
        run_tool(main)
    message = stop.value.code
    assert message.startswith(f"error: the config's type={written!r} is not a registered "
                              f"model type (default scope 'mmdet')")
    if suggested:
        assert f'; {suggested}' in message
    else:
        assert 'did you mean' not in message
    assert '\n' not in message
    monkeypatch.setenv(TRACEBACK_ENV, '1')
    with pytest.raises(KeyError, match='is not in the mmdet::model registry'):
        run_tool(main)


def worker_reraise(error):
    """What torch raises in the main process for ``error`` raised in a DataLoader worker."""
    from torch._utils import ExceptionWrapper
    try:
        try:
            raise OSError('the first error')
        except OSError:
            raise error
    except Exception:
        wrapper = ExceptionWrapper(where='in DataLoader worker process 3')
    try:
        wrapper.reraise()
    except Exception as reraised:
        return reraised


def test_input_errors_from_a_dataloader_worker_are_one_line(monkeypatch):
    from ms_rcnn.datasets.checked_coco import BadImageError
    from ms_rcnn.utils.cli import TRACEBACK_ENV, input_error_message, run_tool, worker_error
    from ms_rcnn.utils.config import ConfigError
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    bad_image = worker_reraise(BadImageError('a/b.png', 'cannot be read'))
    assert type(bad_image) is RuntimeError  # two arguments: torch cannot rebuild ours
    assert worker_error(bad_image) == (
        BadImageError, 'a/b.png: cannot be read. Check the dataset with tools/check_dataset.py.',
        'in DataLoader worker process 3')
    two_lines = worker_reraise(ConfigError('line one\nline two'))
    assert type(two_lines) is ConfigError  # rebuilt from the traceback text
    assert input_error_message(two_lines) == 'line one\nline two (in DataLoader worker process 3)'
    missing = worker_reraise(FileNotFoundError('a.png is missing'))
    assert input_error_message(missing) == 'a.png is missing (in DataLoader worker process 3)'

    def failing(error):
        def main(argv):
            raise error
        return main

    with pytest.raises(SystemExit) as stop:
        run_tool(failing(bad_image))
    assert stop.value.code == ('error: a/b.png: cannot be read. Check the dataset with '
                               'tools/check_dataset.py. (in DataLoader worker process 3)')
    bug = worker_reraise(ValueError('a bug'))  # not bad input: the traceback stays
    assert input_error_message(bug) is None
    with pytest.raises(ValueError, match='a bug'):
        run_tool(failing(bug))
    assert worker_error(RuntimeError('Caught nothing')) is None


def test_a_type_of_ours_written_without_its_scope_is_suggested_with_it(monkeypatch):
    import ms_rcnn  # noqa: F401  registers our modules
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope

    from ms_rcnn.utils.cli import TRACEBACK_ENV, run_tool

    def main(argv):
        with DefaultScope.overwrite_default_scope('mmdet'):
            DATASETS.build(dict(type='CheckedCocoDataset'))

    monkeypatch.delenv(TRACEBACK_ENV, raising=False)
    with pytest.raises(SystemExit) as stop:
        run_tool(main)
    assert "type='CheckedCocoDataset' is not a registered dataset type" in stop.value.code
    assert "; did you mean 'ms_rcnn.CheckedCocoDataset' or 'CocoDataset'" in stop.value.code


def test_other_key_errors_keep_their_traceback(monkeypatch):
    from ms_rcnn.utils.cli import TRACEBACK_ENV, run_tool
    monkeypatch.delenv(TRACEBACK_ENV, raising=False)

    def main(argv):
        return {}['missing']

    with pytest.raises(KeyError, match='missing'):
        run_tool(main)


def test_package_config_falls_back_to_the_installed_copy(tmp_path):
    from ms_rcnn.utils.config import package_config
    rel = osp.join('small_data', 'ms-rcnn_r18_fpn_nuclei-demo.py')
    assert package_config(rel) == osp.join(REPO_ROOT, 'configs', rel)
    package = tmp_path / 'site' / 'ms_rcnn'
    os.makedirs(package / '.mim' / 'configs' / 'small_data')
    (package / '.mim' / 'configs' / rel).write_text('')
    assert package_config(rel, str(package)) == str(package / '.mim' / 'configs' / rel)
    assert package_config('none.py', str(package)) == str(tmp_path / 'site' / 'configs' /
                                                          'none.py')


def test_test_tool_hands_a_url_checkpoint_to_mmengine(toy_root, tmp_path):
    # As in mmdet's tools/test.py: a URL is downloaded, not refused as a missing file.
    url = 'http://127.0.0.1:9/ms_rcnn.pth'  # the discard port: refused at once
    proc = subprocess.run([PY, 'tools/test.py', TOY_CONFIG, url, '--data-root', toy_root,
                           '--work-dir', str(tmp_path)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and 'does not exist' not in proc.stderr
    assert 'Connection refused' in proc.stderr, proc.stderr[-2000:]


def test_mim_train_and_test_with_the_editable_install(trained, toy_root, tmp_path):
    run([MIM, 'train', 'ms_rcnn', TOY_CONFIG, '--work-dir', str(tmp_path), '--data-root',
         toy_root, '--cfg-options', 'train_cfg.max_epochs=1'], cwd=str(tmp_path))
    assert osp.isfile(tmp_path / 'epoch_1.pth')
    out = run([MIM, 'test', 'ms_rcnn', TOY_CONFIG, '--checkpoint',
               osp.join(trained, 'epoch_2.pth'), '--work-dir', str(tmp_path), '--data-root',
               toy_root], cwd=str(tmp_path))
    assert 'Testing finished successfully' in out


def test_target_check_names_a_config_without_a_mask_iou_head(tmp_path):
    config = 'configs/small_data/mask-rcnn_r18_fpn_coco-person.py'
    proc = subprocess.run([PY, 'tools/analysis_tools/mask_iou_target_check.py', config,
                           str(tmp_path / 'any.pth')], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f'error: {config}: model.roi_head has no mask_iou_head, so '
                                   'there are no MaskIoU targets to check')


def test_mim_run_serves_our_tools(toy_root, tmp_path):
    """`mim run ms_rcnn TOOL ...` finds our tools under ms_rcnn/.mim/tools and runs them."""
    out = run([MIM, 'run', 'ms_rcnn', 'check_dataset',
               osp.join(toy_root, 'annotations', 'instances_val.json'),
               osp.join(toy_root, 'images', 'val')], cwd=str(tmp_path))
    assert osp.join('ms_rcnn', '.mim', 'tools', 'check_dataset.py') in out
    assert 'images: 4, annotations:' in out and 'OK: no errors' in out


def test_mim_download_gives_our_config_for_every_model_index_entry(tmp_path):
    """`mim download ms_rcnn --config NAME...` copies our configs; the checkpoints are put there
    beforehand (mim does not fetch a file that exists), so nothing is downloaded."""
    from ms_rcnn.utils.config import model_index_entries
    entries = model_index_entries()
    for entry in entries:
        (tmp_path / entry['Weights'].split('/')[-1]).write_bytes(b'')
    out = run([MIM, 'download', 'ms_rcnn', '--config', *[e['Name'] for e in entries],
               '--dest', str(tmp_path)], cwd=str(tmp_path))
    for entry in entries:
        assert f"processing {entry['Name']}" in out
        cfg = Config.fromfile(str(tmp_path / (entry['Name'] + '.py')))
        assert cfg.model.type == 'ms_rcnn.MaskScoringRCNN', entry['Name']
        assert cfg.model.roi_head.mask_iou_head.type == 'ms_rcnn.MaskIoUHead'


def user_config(tmp_path, base):
    path = tmp_path / 'my_config.py'
    path.write_text(f"_base_ = '{base}'\nmodel = dict(roi_head=dict(mask_iou_head=dict("
                    "fc_out_channels=512)))\n")
    return str(path)


CHECK_INHERIT = ('import sys; import ms_rcnn; from mmengine.config import Config; '
                 'c = Config.fromfile(sys.argv[1]); '
                 'print(c.model.type, c.model.roi_head.mask_iou_head.fc_out_channels)')


def test_user_config_inherits_package_config(tmp_path):
    cfg = user_config(tmp_path, 'ms_rcnn::ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py')
    out = run([PY, '-c', CHECK_INHERIT, cfg], cwd=str(tmp_path))
    assert 'ms_rcnn.MaskScoringRCNN 512' in out


@pytest.mark.slow
def test_non_editable_install_serves_mim_and_config_inheritance(trained, toy_root, tmp_path):
    """`pip install .` (from a clean copy of the tree) then mim and `ms_rcnn::` inheritance."""
    src, target = tmp_path / 'src', tmp_path / 'site'
    files = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard'],
                           cwd=REPO_ROOT, capture_output=True,
                           text=True).stdout.split()
    if not files:
        pytest.skip('not a git checkout: cannot make a clean copy of the tree')
    for name in files:
        if osp.isfile(osp.join(REPO_ROOT, name)):
            os.makedirs(src / osp.dirname(name), exist_ok=True)
            shutil.copy(osp.join(REPO_ROOT, name), src / name)
    run([PY, '-m', 'pip', 'install', '-q', '--no-deps', '--no-build-isolation', '--target',
         str(target), str(src)])
    installed = target / 'ms_rcnn' / '.mim'
    assert (installed / 'configs' / 'ms_rcnn' / 'ms-rcnn_r50_fpn_1x_coco.py').is_file()
    assert (installed / 'tools' / 'train.py').is_file() and not osp.islink(installed / 'tools')
    env = dict(os.environ, PYTHONPATH=str(target))
    cfg = user_config(tmp_path, 'ms_rcnn::ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py')
    check = CHECK_INHERIT + '; import ms_rcnn; print(ms_rcnn.__file__)'
    out = run([PY, '-c', check, cfg], cwd=str(tmp_path), env=env)
    assert 'ms_rcnn.MaskScoringRCNN 512' in out and str(target) in out
    work = tmp_path / 'work'
    out = run([MIM, 'train', 'ms_rcnn', TOY_CONFIG, '--work-dir', str(work), '--data-root',
               toy_root, '--cfg-options', 'train_cfg.max_epochs=1'], cwd=str(tmp_path), env=env)
    demo_config = run([PY, '-c', 'import runpy; print(runpy.run_path("{}")["DEMO_CONFIG"])'.format(
        installed / 'tools' / 'demo.py')], cwd=str(tmp_path), env=env).strip().splitlines()[-1]
    assert demo_config == str(installed / 'configs' / 'small_data' /
                              'ms-rcnn_r18_fpn_nuclei-demo.py')
    # mim ran the installed copy of tools/train.py (it prints the command), not this checkout's.
    assert str(installed / 'tools' / 'train.py') in out
    assert osp.isfile(work / 'epoch_1.pth')
    out = run([MIM, 'test', 'ms_rcnn', TOY_CONFIG, '--checkpoint', str(work / 'epoch_1.pth'),
               '--work-dir', str(work), '--data-root', toy_root], cwd=str(tmp_path), env=env)
    assert 'Testing finished successfully' in out


def test_mask_score_analysis_tool(trained, toy_root, tmp_path):
    out = run([PY, 'tools/analysis_tools/mask_score_analysis.py', TOY_CONFIG,
               osp.join(trained, 'epoch_2.pth'), '--data-root', toy_root, '--out-dir',
               str(tmp_path)])
    with open(tmp_path / 'summary.json') as f:
        summary = json.load(f)
    assert summary['has_mask_iou_head'] is True or summary['num_detections'] == 0
    assert set(summary['segm_ap']) >= {'by_classification_score',
                                       'by_classification_score_x_true_iou'}
    assert (tmp_path / 'analysis.png').stat().st_size > 1000
    assert 'segm AP with masks ranked' in out


def test_mask_iou_target_check_tool(trained, toy_root, tmp_path):
    out = run([PY, 'tools/analysis_tools/mask_iou_target_check.py', TOY_CONFIG,
               osp.join(trained, 'epoch_2.pth'), '--data-root', toy_root, '--num-images', '4',
               '--json', str(tmp_path / 'check.json')])
    with open(tmp_path / 'check.json') as f:
        report = json.load(f)
    assert report['all']['num_rois'] > 0  # the GT boxes are always positives
    # The training targets are the IoU of each binarised mask with its GT instance, the same
    # quantity the tool measures independently by pasting the mask into the image; they agree
    # up to resampling (about 0.98 and 0.06 on this data; unrelated values give about 0 / 0.3).
    assert report['all']['pearson'] > 0.9
    assert report['all']['mean_abs_diff'] < 0.15
    assert report['target_above_0']['num_rois'] <= report['all']['num_rois']
    assert 'mean |target - pasted IoU|' in out


@pytest.mark.slow
def test_demo_end_to_end_on_tiny_data(tmp_path):
    from ms_rcnn.testing import make_toy_coco
    root = str(tmp_path / 'data')
    make_toy_coco(root, num_images=4, size=(128, 128), classes=('nucleus', ))
    out = run([PY, 'tools/demo.py', '--data-root', root, '--max-iters', '3', '--work-dir',
               str(tmp_path / 'demo')])
    with open(tmp_path / 'demo' / 'demo_summary.json') as f:
        summary = json.load(f)
    assert osp.isfile(summary['checkpoint']) and summary['data_root'] == root
    assert osp.isfile(summary['analysis']['figure'])
    assert len(summary['visualizations']) == 4
    assert all(osp.isfile(p) for p in summary['visualizations'])
    for line in ('checkpoint:', 'analysis summary:', 'analysis figure:', 'visualizations:'):
        assert line in out


@pytest.mark.slow
def test_demo_shortens_an_epoch_based_config(tmp_path):
    from ms_rcnn.testing import make_toy_coco
    root = str(tmp_path / 'data')
    make_toy_coco(root, num_images=2, size=(96, 128), classes=('balloon', ))
    out = run([PY, 'tools/demo.py', '--config', 'configs/small_data/ms-rcnn_r18_fpn_balloon.py',
               '--data-root', root, '--max-iters', '2', '--work-dir', str(tmp_path / 'demo')])
    with open(tmp_path / 'demo' / 'demo_summary.json') as f:
        summary = json.load(f)
    assert summary['checkpoint'].endswith('iter_2.pth') and osp.isfile(summary['checkpoint'])
    assert 'Saving checkpoint at 2 iterations' in out and 'coco/segm_mAP' in out


def test_mmdet_inference_api_loads_our_checkpoint(trained, toy_root):
    """mmdet's own init_detector/inference_detector: custom_imports brings in ms_rcnn."""
    from mmdet.apis import inference_detector, init_detector
    from mmengine.config import Config
    cfg = Config.fromfile(TOY_CONFIG)
    model = init_detector(cfg, osp.join(trained, 'epoch_2.pth'), device='cpu')
    state = torch.load(osp.join(trained, 'epoch_2.pth'))['state_dict']
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    result = inference_detector(model, osp.join(toy_root, 'images', 'val', 'val_0001.png'))
    assert {'scores', 'bbox_scores', 'mask_ious', 'masks'} <= set(result.pred_instances.keys())


@pytest.mark.filterwarnings('ignore:Failed to add .*LocalVisBackend')  # mmengine, no save_dir
def test_our_inferencer_keeps_the_scoring_fields(trained, toy_root, tmp_path):
    """mmdet's DetInferencer dicts drop bbox_scores and mask_ious; ours keep them, in the
    returned dicts and in out_dir/preds/*.json, for file and array inputs alike."""
    import cv2
    from mmdet.apis import DetInferencer
    from ms_rcnn.apis import MaskScoringDetInferencer
    image = osp.join(toy_root, 'images', 'val', 'val_0001.png')
    args = (TOY_CONFIG, osp.join(trained, 'epoch_2.pth'))
    theirs = DetInferencer(*args, device='cpu')(image, pred_score_thr=0.0)['predictions'][0]
    assert 'bbox_scores' not in theirs  # why ours exists
    ours = MaskScoringDetInferencer(*args, device='cpu')
    out = ours([image, cv2.imread(image)], out_dir=str(tmp_path), no_save_pred=False,
               no_save_vis=True, pred_score_thr=0.0)['predictions']
    for pred in out:
        assert len(pred['bbox_scores']) == len(pred['mask_ious']) == len(pred['scores']) > 0
        assert pred['scores'] == pytest.approx(
            [b * m for b, m in zip(pred['bbox_scores'], pred['mask_ious'])], abs=1e-6)
    assert {k: v for k, v in out[0].items() if k not in ('bbox_scores', 'mask_ious')} == theirs
    for name, pred in (('val_0001', out[0]), ('0', out[1])):
        with open(tmp_path / 'preds' / f'{name}.json') as f:
            assert json.load(f) == pred


@pytest.mark.filterwarnings('ignore:Failed to add .*LocalVisBackend')  # mmengine, no save_dir
def test_our_inferencer_refuses_a_checkpoint_that_does_not_fit(trained):
    """mmdet's inferencer prints the mismatch and predicts with random heads; ours stops."""
    from mmengine.config import Config
    from ms_rcnn.apis import MaskScoringDetInferencer
    from ms_rcnn.utils.checkpoint import CheckpointMismatchError
    cfg = Config.fromfile(TOY_CONFIG)
    for head in ('bbox_head', 'mask_head', 'mask_iou_head'):
        cfg.model.roi_head[head].num_classes += 1
    weights = osp.join(trained, 'epoch_2.pth')
    with pytest.raises(CheckpointMismatchError, match=f'{weights}.*other shapes'):
        MaskScoringDetInferencer(cfg, weights, device='cpu')


@pytest.mark.filterwarnings('ignore:Checkpoint is not loaded')
@pytest.mark.filterwarnings('ignore:weights is None')
@pytest.mark.filterwarnings('ignore:Failed to add .*LocalVisBackend')
def test_our_inferencer_takes_a_package_config_name():
    from ms_rcnn.apis import MaskScoringDetInferencer
    inferencer = MaskScoringDetInferencer('ms_rcnn::small_data/ms-rcnn_r18_fpn_balloon.py',
                                          device='cpu')
    assert type(inferencer.model).__name__ == 'MaskScoringRCNN'
    assert inferencer.model.roi_head.mask_iou_head.num_classes == 1


def test_our_inferencer_resolves_our_model_index_names_to_our_configs(tmp_path):
    """mmdet's inferencer builds mmdet's own MS R-CNN for these names; ours builds ours."""
    from ms_rcnn.apis import resolve_model_name
    from ms_rcnn.utils.config import package_config
    ours = package_config('ms_rcnn/ms-rcnn_r50-caffe_fpn_1x_coco.py')
    url = ('https://download.openmmlab.com/mmdetection/v2.0/ms_rcnn/ms_rcnn_r50_caffe_fpn_1x_coco/'
           'ms_rcnn_r50_caffe_fpn_1x_coco_20200702_180848-61c9355e.pth')
    assert resolve_model_name('ms-rcnn_r50-caffe_fpn_1x_coco', None) == (ours, url)
    assert resolve_model_name('MS-RCNN_R50-Caffe_FPN_1x_COCO', 'mine.pth') == (ours, 'mine.pth')
    assert Config.fromfile(ours).model.type == 'ms_rcnn.MaskScoringRCNN'
    # other names go on to mmdet's model zoo; files and config objects stay as they are
    assert resolve_model_name('mask-rcnn_r50_fpn_1x_coco', None) == (
        'mask-rcnn_r50_fpn_1x_coco', None)
    assert resolve_model_name(TOY_CONFIG, 'w.pth') == (TOY_CONFIG, 'w.pth')
    cfg = Config(dict(model=dict(type='x')))
    assert resolve_model_name(cfg, None) == (cfg, None)
    assert resolve_model_name('ms_rcnn::small_data/ms-rcnn_r18_fpn_balloon.py', None) == (
        package_config('small_data/ms-rcnn_r18_fpn_balloon.py'), None)


def test_train_max_iters_shortens_an_epoch_based_config(toy_root, tmp_path):
    work_dir = tmp_path / 'short'
    out = run([PY, 'tools/train.py', TOY_CONFIG, '--data-root', toy_root, '--work-dir',
               str(work_dir), '--max-iters', '1'])
    assert 'Saving checkpoint at 1 iterations' in out and 'coco/segm_mAP' in out
    assert sorted(p.name for p in work_dir.glob('*.pth')) == ['iter_1.pth']


def test_train_max_iters_below_one_is_one_line(toy_root, tmp_path):
    proc = subprocess.run([PY, 'tools/train.py', TOY_CONFIG, '--data-root', toy_root,
                           '--max-iters', '0', '--work-dir', str(tmp_path / 'wd')],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert 'error: --max-iters must be at least 1, got 0' in proc.stderr
    assert 'Traceback' not in proc.stderr and not osp.exists(tmp_path / 'wd')


@pytest.mark.parametrize('config, nuclei', [(None, True), (TOY_CONFIG, False)])
def test_demo_downloads_the_nuclei_only_for_its_own_config(config, nuclei, monkeypatch,
                                                           tmp_path):
    """Another config without --data-root trains on its own data root."""
    import importlib.util
    spec = importlib.util.spec_from_file_location('demo_tool', osp.join(REPO_ROOT, 'tools',
                                                                        'demo.py'))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    calls = []

    class Stop(Exception):
        pass

    def load_config(path, data_root=None, work_dir=None):
        calls.append(('load_config', data_root))
        raise Stop

    monkeypatch.setattr(demo, 'make_nuclei_coco', lambda root, cache: calls.append(('nuclei', )))
    monkeypatch.setattr(demo, 'load_config', load_config)
    argv = ['--cache-dir', str(tmp_path)] + (['--config', config] if config else [])
    with pytest.raises(Stop):
        demo.main(argv)
    nuclei_root = osp.join(str(tmp_path), 'nuclei_coco')
    assert calls == ([('nuclei', ), ('load_config', nuclei_root)] if nuclei
                     else [('load_config', None)])


def test_checked_device_names_what_is_wrong():
    from ms_rcnn.utils.cli import checked_device
    from ms_rcnn.utils.config import ConfigError
    assert checked_device('cpu') == 'cpu'
    with pytest.raises(ConfigError, match=r"--device 'gpu0' is not a device"):
        checked_device('gpu0')
    if torch.cuda.is_available():
        with pytest.raises(ConfigError, match='CUDA device'):
            checked_device(f'cuda:{torch.cuda.device_count()}')
    else:
        with pytest.raises(ConfigError, match='--device cuda:0: no CUDA device here'):
            checked_device('cuda:0')


def test_checked_device_counts_the_devices(monkeypatch):
    """One GPU (faked): cuda and cuda:0 are it, cuda:1 is one too many."""
    from ms_rcnn.utils.cli import checked_device
    from ms_rcnn.utils.config import ConfigError
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 1)
    assert checked_device('cuda') == 'cuda' and checked_device('cuda:0') == 'cuda:0'
    with pytest.raises(ConfigError, match=r'--device cuda:1: only 1 CUDA device\(s\) here'):
        checked_device('cuda:1')


def test_analysis_tool_refuses_a_missing_device_in_one_line(tmp_path):
    device = f'cuda:{torch.cuda.device_count()}'  # one past the last (cuda:0 without a GPU)
    proc = subprocess.run([PY, 'tools/analysis_tools/mask_score_analysis.py', TOY_CONFIG,
                           str(tmp_path / 'none.pth'), '--device', device],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and f'error: --device {device}' in proc.stderr
    assert 'Traceback' not in proc.stderr


def test_train_warns_about_an_evaluator_on_another_file_and_stops_at_its_first_image(
        toy_root, tmp_path):
    """Without the warning this is found only after the first epoch."""
    other = osp.join(toy_root, 'annotations', 'instances_train.json')
    proc = subprocess.run([PY, 'tools/train.py', TOY_CONFIG, '--data-root', toy_root,
                           '--max-iters', '1', '--work-dir', str(tmp_path / 'wd'),
                           '--cfg-options', f'val_evaluator.ann_file={other}'],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f'warning: val_evaluator.ann_file {other} lacks '), \
        proc.stderr[-2000:]
    assert proc.returncode == 1 and lines[-1].startswith(f'error: {other}: ')
    assert 'Traceback' not in proc.stderr
