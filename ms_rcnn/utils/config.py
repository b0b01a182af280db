"""Helpers that adjust configs for a user's data."""
import os.path as osp
import re
from typing import Any, Iterator, List, Optional, Tuple

from mmengine.config import Config
from mmengine.config import utils as config_utils


def dataset_cfgs(dataset: Any) -> Iterator[dict]:
    """A dataset config and every one inside it, depth first.

    Follows wrappers' ``dataset`` (``RepeatDataset``, ``ClassBalancedDataset``, ...) and
    ``ConcatDataset``'s ``datasets``.

    Args:
        dataset (dict | None): A dataset config, e.g. ``cfg.train_dataloader.dataset``.

    Yields:
        dict: Each dataset config, wrappers before what they wrap.
    """
    if not isinstance(dataset, dict):
        return
    yield dataset
    yield from dataset_cfgs(dataset.get('dataset'))
    for child in dataset.get('datasets') or []:
        yield from dataset_cfgs(child)


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
        datasets = list(dataset_cfgs(loader.get('dataset') if loader else None))
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


def load_config(path: str, cfg_options: Optional[dict] = None, data_root: Optional[str] = None,
                work_dir: Optional[str] = None, launcher: str = 'none', *,
                check_classes: bool = True) -> Config:
    """Read a config and apply the command-line overrides shared by our tools.

    Args:
        path (str): Config file.
        cfg_options (dict, optional): ``--cfg-options`` overrides.
        data_root (str, optional): ``--data-root`` (see :func:`set_data_root`). Without it, a
            ``data_root`` in ``cfg_options`` is applied the same way, since merging it alone
            would not reach the paths the config computed from it. The data root is applied
            first, so other ``cfg_options`` (e.g. one evaluator's ``ann_file``) still win.
        work_dir (str, optional): ``--work-dir``; defaults to ``./work_dirs/<config name>``
            unless the config sets one.
        launcher (str): ``--launcher``.
        check_classes (bool): Refuse a config whose heads and datasets disagree on the number
            of classes (:func:`check_num_classes`). Defaults to True.

    Returns:
        Config: The config.

    Raises:
        ConfigError: With ``check_classes``, the heads and datasets disagree on the number of
            classes.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'config {path} does not exist')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if data_root is None and cfg_options and 'data_root' in cfg_options:
        data_root = cfg_options['data_root']
        if not isinstance(data_root, str):  # mmengine's DictAction parses numbers and commas
            raise ConfigError(
                f'--cfg-options data_root was read as {type(data_root).__name__} {data_root!r}, '
                f'not a path: give the directory with --data-root instead')
    if data_root is not None:
        set_data_root(cfg, data_root)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
        if data_root is not None:
            cfg.data_root = data_root  # --data-root wins over a data_root in cfg_options
    if check_classes:
        check_num_classes(cfg)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


#: Checkpoint prefixes that mmengine loads through torchvision's model zoo.
TORCHVISION_SCHEMES = ('torchvision://', 'modelzoo://')


def torchvision_weights(node: Any, field: str = 'model') -> List[Tuple[str, str]]:
    """Every ``torchvision://`` (or ``modelzoo://``) checkpoint a model config loads.

    mmdet's pytorch-style ResNet configs start from ImageNet weights named so
    (``model.backbone.init_cfg.checkpoint='torchvision://resnet50'``); loading them imports
    torchvision.

    Args:
        node: A config node, e.g. ``cfg.model``.
        field (str): Its dotted name, for the result.

    Returns:
        list[tuple[str, str]]: ``(field, checkpoint)`` pairs, e.g.
        ``('model.backbone.init_cfg.checkpoint', 'torchvision://resnet50')``.
    """
    if isinstance(node, str):
        return [(field, node)] if node.startswith(TORCHVISION_SCHEMES) else []
    if isinstance(node, dict):
        return [found for key, value in node.items()
                if key in ('checkpoint', 'pretrained') or isinstance(value, (dict, list, tuple))
                for found in torchvision_weights(value, f'{field}.{key}')]
    if isinstance(node, (list, tuple)):
        return [found for index, value in enumerate(node)
                for found in torchvision_weights(value, f'{field}[{index}]')]
    return []


def check_pretrained_weights_loadable(cfg: Config, path: str) -> None:
    """Refuse, before anything is built, ImageNet weights that torchvision cannot provide.

    Without it, training stops after the datasets are built with a ``ModuleNotFoundError``
    deep in mmengine's weight initialisation.

    Args:
        cfg (Config): The training config.
        path (str): Its file, for the message.

    Raises:
        MissingDependencyError: The model loads ``torchvision://`` weights and torchvision
            cannot be imported; says what to install, or how to train from scratch.
    """
    fields = torchvision_weights(cfg.get('model'))
    if not fields:
        return
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # noqa: BLE001  missing, or built for another torch
        import torch
        major, minor = (int(v) for v in torch.__version__.split('.')[:2])
        match = f'torchvision==0.{minor + 15}.*' if major == 2 else 'torchvision'
        # An init_cfg goes as a whole; a ``pretrained`` string is set to None itself.
        scratch = ' '.join(sorted({re.sub(r'\.checkpoint$', '', field) + '=None'
                                   for field, _ in fields}))
        named = ', '.join(f'{field}={checkpoint}' for field, checkpoint in fields)
        raise MissingDependencyError(
            f'{path}: {named} loads ImageNet weights through torchvision, which '
            f'cannot be imported ({type(exc).__name__}: {exc}). Install the torchvision '
            f'that matches torch {torch.__version__} ({match}, from the same index as torch: '
            f'a CPU build needs the CPU torchvision), or train from scratch with '
            f'--cfg-options {scratch}') from None


def package_file(rel: str, package_dir: Optional[str] = None) -> str:
    """Path of one of our mim files, ``rel`` under the checkout's root (``configs/...``,
    ``model-index.yml``).

    From a checkout that is the checkout's file; from an installed wheel (``pip install .``),
    which holds no checkout, the copy in the package's ``.mim``. When neither exists, the
    checkout's path, for the error that names it.

    Args:
        rel (str): Path under the checkout's root.
        package_dir (str, optional): The ``ms_rcnn`` package directory (default: this one).
    """
    package_dir = package_dir or osp.dirname(osp.dirname(osp.abspath(__file__)))
    checkout = osp.join(osp.dirname(package_dir), rel)
    installed = osp.join(package_dir, '.mim', rel)
    return installed if not osp.isfile(checkout) and osp.isfile(installed) else checkout


def package_config(rel: str, package_dir: Optional[str] = None) -> str:
    """Path of one of our configs, ``rel`` under ``configs/`` (see :func:`package_file`)."""
    return package_file(osp.join('configs', rel), package_dir)


def model_index_entries(package_dir: Optional[str] = None) -> List[dict]:
    """The models of our ``model-index.yml`` (what ``mim search`` / ``mim download`` read):
    each a dict with ``Name``, ``Config`` (under the checkout's root) and ``Weights``."""
    import yaml
    with open(package_file('model-index.yml', package_dir)) as f:
        index = yaml.safe_load(f)
    models = []
    for rel in index['Import']:
        with open(package_file(rel, package_dir)) as f:
            models += yaml.safe_load(f)['Models']
    return models


def find_model_entry(name: str, package_dir: Optional[str] = None) -> Optional[dict]:
    """Our model-index entry called ``name`` (or with that alias), as mmengine's inferencers
    match names (case-insensitive); None when we have none."""
    name = name.lower()
    for entry in model_index_entries(package_dir):
        aliases = entry.get('Alias', [])
        aliases = [aliases] if isinstance(aliases, str) else aliases
        if name == entry['Name'].lower() or name in [a.lower() for a in aliases]:
            return entry
    return None


class ConfigError(ValueError):
    """Config values that contradict each other or the data; the message names the fields."""


#: The RoI heads' fields that must equal the number of dataset classes.
CLASS_HEADS = ('bbox_head', 'mask_head', 'mask_iou_head')


def dataset_classes(dataset: dict) -> Optional[tuple]:
    """The classes a dataset config will have: its ``metainfo.classes``, else its type's
    (for COCO-style types).

    Args:
        dataset (dict): A dataset config (not a wrapper).

    Returns:
        tuple | None: The class names, or None when not known here (a type that is not a
        ``CocoDataset``, or one without fixed classes).

    Raises:
        ConfigError: ``metainfo.classes`` is a single string (``('balloon')`` without the
            trailing comma), which mmdet would read as one class per letter.
    """
    classes = (dataset.get('metainfo') or {}).get('classes')
    if isinstance(classes, str):
        raise ConfigError(f'metainfo.classes is the string {classes!r}, not a tuple of names: '
                          f'write ({classes!r},) with the trailing comma')
    if classes is not None:
        return tuple(classes)
    from mmdet.datasets import CocoDataset

    from ..registry import DATASETS
    try:
        dataset_type = DATASETS.get(dataset.get('type'))
    except Exception:  # noqa: BLE001 - a type mmengine cannot resolve here is not ours to judge
        return None
    # Only COCO-style types, whose classes mmdet's NumClassCheckHook holds the heads to.
    if not (isinstance(dataset_type, type) and issubclass(dataset_type, CocoDataset)):
        return None
    classes = (getattr(dataset_type, 'METAINFO', None) or {}).get('classes')
    return tuple(classes) if classes is not None else None


def labelling_datasets(dataset: Any) -> Iterator[dict]:
    """The datasets whose classes name a wrapper's labels: through ``dataset`` wrappers, and
    only the first of ``ConcatDataset``'s ``datasets`` (whose ``metainfo`` it takes)."""
    if not isinstance(dataset, dict):
        return
    if dataset.get('datasets'):
        yield from labelling_datasets(dataset['datasets'][0])
    elif isinstance(dataset.get('dataset'), dict):
        yield from labelling_datasets(dataset['dataset'])
    elif dataset.get('ann_file') or dataset.get('metainfo'):
        yield dataset


def check_num_classes(cfg: Config) -> None:
    """Refuse a config whose RoI heads and datasets disagree on the number of classes.

    Checked before anything is built, so the error names the config fields at fault instead of
    an assertion when training starts or an index error after the first evaluation.

    Args:
        cfg (Config): The config.

    Raises:
        ConfigError: The heads' ``num_classes`` differ from each other or from a dataset's
            number of classes.
    """
    roi_head = (cfg.get('model') or {}).get('roi_head') or {}
    counts = {f'model.roi_head.{name}.num_classes': roi_head[name]['num_classes']
              for name in CLASS_HEADS
              if isinstance(roi_head.get(name), dict) and 'num_classes' in roi_head[name]}
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        for dataset in labelling_datasets(loader.get('dataset') if loader else None):
            classes = dataset_classes(dataset)
            if classes is not None:
                shown = classes if len(classes) <= 6 \
                    else f'({", ".join(map(repr, classes[:3]))}, ...)'
                counts[f'{split}_dataloader.dataset classes {shown}'] = len(classes)
    if len(set(counts.values())) > 1:
        listed = '; '.join(f'{field}: {value}' for field, value in counts.items())
        raise ConfigError(f'the number of classes differs: {listed}. Set every head\'s '
                          f'num_classes to the number of metainfo classes of the datasets')


def join_data_root(data_root: Optional[str], path: str) -> str:
    """Join a dataset config's path to its ``data_root`` as mmdet's ``BaseDataset`` does."""
    return osp.join(data_root, path) if data_root and not osp.isabs(path) else path


def evaluator_mismatches(cfg: Config, split: str) -> Tuple[List[str], List[str]]:
    """Evaluator annotation files that are missing or do not hold the split's images.

    ``MaskScoringCocoMetric`` stops at the first image its file lacks (or names by another
    file name), which in training is after the first epoch. A file at another path is compared
    by its images (ids and file names), so a copy passes; a file with more images is only a
    warning (COCO AP counts their ground truth as missed).

    Args:
        cfg (Config): The config (after ``--data-root``, which rewrites both).
        split (str): ``'val'`` or ``'test'``.

    Returns:
        tuple: (errors, warnings), one message per evaluator ``ann_file`` at fault.
    """
    from ..datasets.coco_checks import same_file
    loader = cfg.get(f'{split}_dataloader')
    evaluator = cfg.get(f'{split}_evaluator')
    if not loader or not evaluator:
        return [], []
    ann_files = [join_data_root(d.get('data_root'), d['ann_file'])
                 for d in dataset_cfgs(loader.get('dataset')) if d.get('ann_file')]
    errors: List[str] = []
    warnings: List[str] = []
    for metric in evaluator if isinstance(evaluator, list) else [evaluator]:
        ann_file = metric.get('ann_file') if isinstance(metric, dict) else None
        if not ann_file or not ann_files or '://' in str(ann_file):
            continue
        field = f'{split}_evaluator.ann_file {ann_file}'
        if not osp.isfile(ann_file):
            errors.append(f'{field} does not exist')
            continue
        if osp.realpath(ann_file) in {osp.realpath(path) for path in ann_files}:
            continue
        theirs = _image_names(ann_file)
        ours = {}
        for path in ann_files:
            ours.update(_image_names(path) if osp.isfile(path) else {})
        lacking = [(i, name) for i, name in ours.items()
                   if not same_file(str(theirs.get(i)), str(name))]
        if lacking:
            errors.append(f'{field} lacks {len(lacking)} of the {len(ours)} images of '
                          f'{split}_dataloader.dataset ({", ".join(ann_files)}) or names them '
                          f'otherwise (e.g. id {lacking[0][0]!r}, {lacking[0][1]!r}): the '
                          f'evaluation would stop at the first of them')
        elif len(theirs) > len(ours):
            warnings.append(f'{field} has {len(theirs) - len(ours)} images more than '
                            f'{split}_dataloader.dataset: COCO AP counts their ground truth '
                            f'as missed')
    return errors, warnings


def _image_names(ann_file: str) -> dict:
    """``{image id: file_name}`` of a COCO annotation file (empty if it is not one)."""
    from ..datasets.coco_checks import DatasetInputError, load_annotation_file
    try:
        data = load_annotation_file(ann_file)
    except DatasetInputError:
        return {}
    images = data.get('images') if isinstance(data, dict) else None
    return {img.get('id'): img.get('file_name') for img in images or [] if isinstance(img, dict)}


def shorten_training(cfg: Config, max_iters: int) -> None:
    """Train for ``max_iters`` iterations, evaluate and save once at the end.

    Epoch-based configs become iteration-based: the loop, the checkpoint hook, the log and the
    schedule: a warm-up (:func:`is_warmup`) kept to the run's first fifth, a step schedule's
    milestone moved to 80% of the run, any other schedule (cosine, ...) spread over the run.
    For a quick run of any config (``--max-iters`` of ``tools/train.py`` and ``tools/demo.py``).

    Args:
        cfg (Config): The config, changed in place.
        max_iters (int): Training iterations (at least 1).

    Raises:
        ConfigError: ``max_iters`` is below 1.
    """
    if max_iters < 1:
        raise ConfigError(f'--max-iters must be at least 1, got {max_iters}')
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
    cfg.default_hooks.checkpoint.update(by_epoch=False, interval=max_iters)
    cfg.log_processor = dict(cfg.get('log_processor', {}), by_epoch=False)
    schedulers = cfg.get('param_scheduler') or []
    if isinstance(schedulers, dict):
        schedulers = cfg.param_scheduler = [schedulers]
    for scheduler in schedulers:
        scheduler.pop('convert_to_iter_based', None)  # only for epoch-based schedulers
        if is_warmup(scheduler):
            scheduler.end = min(scheduler.get('end', max_iters), max(1, max_iters // 5))
        elif scheduler_name(scheduler) == 'MultiStepLR':
            scheduler.update(by_epoch=False, begin=0, end=max_iters,
                             milestones=[max(1, int(max_iters * 0.8))])
        else:  # another schedule (epochs or iterations): over the whole run, in iterations
            scheduler.update(by_epoch=False, begin=0, end=max_iters)
            if 'T_max' in scheduler:
                scheduler.T_max = max_iters


#: Schedulers that mmdet's configs use, iteration-based from iteration 0, for a warm-up.
WARMUP_SCHEDULERS = ('LinearLR', 'ConstantLR', 'LinearMomentum', 'ConstantMomentum')


def scheduler_name(scheduler: dict) -> str:
    """A ``param_scheduler`` entry's type without its registry scope (``mmengine.LinearLR``:
    ``LinearLR``)."""
    return str(scheduler.get('type', '')).split('.')[-1]


def is_warmup(scheduler: dict) -> bool:
    """Whether a ``param_scheduler`` entry is a warm-up: an iteration-based linear or constant
    scheduler starting at iteration 0 (``LinearLR(by_epoch=False, begin=0, end=500)``)."""
    return (scheduler_name(scheduler) in WARMUP_SCHEDULERS
            and not scheduler.get('by_epoch', True) and scheduler.get('begin', 0) == 0)


class MissingDependencyError(ImportError):
    """A package that the config needs (e.g. torchvision for ``torchvision://`` weights) is
    missing; the message says what to install or to change."""


def enable_package_config_inheritance() -> None:
    """Let configs use ``_base_ = 'ms_rcnn::ms_rcnn/<config>.py'``.

    mmengine resolves ``pkg::path`` only for packages in its ``MODULE2PACKAGE`` table; this adds
    ours. The path is looked up under the installed package's ``.mim/configs``. Our tools import
    ``ms_rcnn`` before reading a config, so such inheritance works with them and with mim.
    """
    config_utils.MODULE2PACKAGE.setdefault('ms_rcnn', 'ms_rcnn')
