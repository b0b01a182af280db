"""Helpers that adjust configs for a user's data."""
import os.path as osp

from mmengine.config import Config
from mmengine.config import utils as config_utils


def _datasets(loader_cfg):
    """The dataset configs of a dataloader config, through dataset wrappers."""
    dataset = loader_cfg.get('dataset') if loader_cfg else None
    while dataset is not None:
        yield dataset
        dataset = dataset.get('dataset')


def set_data_root(cfg: Config, data_root: str) -> Config:
    """Point every dataloader and COCO evaluator of ``cfg`` at ``data_root``.

    Changing the ``data_root`` variable with ``--cfg-options`` does not reach values that were
    computed from it when the config was read (e.g. ``val_evaluator.ann_file``); this rewrites
    them: each dataset's ``data_root``, and each evaluator's ``ann_file`` as the matching
    dataset's annotation file under the new root.

    Args:
        cfg (Config): The config, changed in place.
        data_root (str): The new dataset root directory.

    Returns:
        Config: ``cfg``.
    """
    if not osp.isdir(data_root):
        raise FileNotFoundError(f'data root {data_root} is not a directory')
    cfg.data_root = data_root
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        datasets = list(_datasets(loader))
        for dataset in datasets:
            if 'data_root' in dataset or 'ann_file' in dataset:
                dataset.data_root = data_root
        evaluator = cfg.get(f'{split}_evaluator')
        ann_files = [d.ann_file for d in datasets if d.get('ann_file')]
        if evaluator and ann_files:
            for metric in evaluator if isinstance(evaluator, list) else [evaluator]:
                if 'ann_file' in metric:
                    metric.ann_file = osp.join(data_root, ann_files[-1])
    return cfg


def enable_package_config_inheritance() -> None:
    """Let configs use ``_base_ = 'ms_rcnn::ms_rcnn/<config>.py'``.

    mmengine resolves ``pkg::path`` only for packages in its ``MODULE2PACKAGE`` table; this adds
    ours. The path is looked up under the installed package's ``.mim/configs``. Our tools import
    ``ms_rcnn`` before reading a config, so such inheritance works with them and with mim.
    """
    config_utils.MODULE2PACKAGE.setdefault('ms_rcnn', 'ms_rcnn')
