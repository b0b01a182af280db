"""Check a COCO-style instance-segmentation dataset before training.

Reads an annotation file (and optionally the images it lists) and reports every problem found,
not just the first, each naming the image file and/or annotation id at fault.

Usage::

    python tools/check_dataset.py ANN_FILE IMG_DIR [--max-print N] [--json OUT.json]
    python tools/check_dataset.py CONFIG --split train|val|test [--data-root DIR]

Images are decoded as mmdet's ``LoadImageFromFile`` decodes them by default, turned as their
EXIF orientation says; ``--ignore-exif-orientation`` compares the stored pixels instead. In the
config form they are decoded with the ``color_type`` of the pipeline's ``LoadImageFromFile``.

In the config form, ``ann_file``, ``data_root`` and ``data_prefix.img`` are read from
``<split>_dataloader.dataset`` (through wrappers such as ``RepeatDataset`` that nest a
``dataset``, and ``ConcatDataset``'s ``datasets``); relative paths are joined to ``data_root``
as MMDetection does, and a relative ``data_root`` is taken from the current directory. The
config form also checks what the dataset and the evaluator will do with the file: each
dataset's ``metainfo`` classes must be categories of its file, one each, in the file's order
(categories left out are a warning); the heads' and datasets' numbers of classes must agree;
and for ``val``/``test`` each evaluator's ``ann_file`` must exist and hold the split's images.
In both forms a file that lists no images is an error, and in the config form so is a training
set whose ``filter_cfg`` (``filter_empty_gt``, ``min_size``) would leave out every image
(``dataset_errors`` in the JSON report).

Exit status: 0 when there is no error (warnings allowed), 1 when there is at least one error,
2 when the input cannot be read (missing or invalid JSON, a config that cannot be read or
names no annotation file). ``--json`` is written (atomically) in every case, with ``status``;
with status 2, ``input_errors`` says why and ``reports`` is empty.

The problem kinds and their severities are tabled in ``ms_rcnn/datasets/coco_checks.py``; the
dataset that training uses applies the same checks as it loads (``docs/bad_data.md``).
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys
from collections import Counter
from dataclasses import asdict
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from mmcv.image.io import imread_flags

from ms_rcnn.datasets.coco_checks import (ERROR, WARNING, DatasetInputError, Problem,
                                          check_coco, class_mismatch, is_finite_number, is_id,
                                          left_out_warning, load_annotation_file)
from ms_rcnn.utils.config import (ConfigError, check_num_classes, dataset_cfgs,
                                  dataset_classes, evaluator_mismatches, join_data_root,
                                  load_config)
from ms_rcnn.utils.json_report import write_json


class Source(NamedTuple):
    """One annotation file to check, its image directory, how its images are decoded
    (``LoadImageFromFile``'s ``color_type``) and, from a config, the dataset's classes."""
    ann_file: str
    img_dir: Optional[str]
    color_type: str = 'color'
    classes: Optional[tuple] = None
    filter_empty_gt: bool = False
    min_size: float = 0


def _dataset_source(dataset: dict, data_root: Optional[str],
                    classes: Optional[tuple]) -> Source:
    """The files of one dataset config, joined to its (or the given) root, with its classes
    (None where they cannot be read: :func:`check_config` reports that) and whether mmdet keeps
    only its images with annotations (``filter_cfg.filter_empty_gt``) and of at least
    ``filter_cfg.min_size`` pixels on a side, as mmdet's ``CocoDataset.filter_data`` does
    outside test mode."""
    root = data_root if data_root is not None else (dataset.get('data_root') or '')
    prefix = dataset.get('data_prefix') or {}
    img_prefix = prefix.get('img', prefix.get('img_path', '')) or ''
    filter_cfg = {} if dataset.get('test_mode', False) else (dataset.get('filter_cfg') or {})
    min_size = filter_cfg.get('min_size', 0)
    return Source(join_data_root(root, dataset['ann_file']), join_data_root(root, img_prefix),
                  _color_type(dataset.get('pipeline')), classes,
                  bool(filter_cfg.get('filter_empty_gt')),
                  min_size if is_finite_number(min_size) else 0)


def _color_type(pipeline: Any) -> str:
    """The ``color_type`` of a pipeline's ``LoadImageFromFile`` (its default, ``'color'``)."""
    for transform in pipeline or []:
        if isinstance(transform, dict) and \
                str(transform.get('type', '')).endswith('LoadImageFromFile'):
            color_type = transform.get('color_type', 'color')
            if color_type not in imread_flags:
                raise DatasetInputError(
                    f'LoadImageFromFile.color_type={color_type!r} is not one of mmcv\'s '
                    f'{sorted(imread_flags)}')
            return color_type
    return 'color'


def sources_from_config(config: str, split: str,
                        data_root: Optional[str] = None) -> List[Source]:
    """Annotation files and image directories of a config's ``<split>_dataloader``.

    Each image directory is checked the way its pipeline's ``LoadImageFromFile`` decodes it
    (its ``color_type``: with ``'color_ignore_orientation'`` the EXIF orientation is not
    applied).

    Args:
        config (str): Path of an mmdet config file.
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        data_root (str | None): Replaces every dataset's ``data_root`` when given.

    Returns:
        list[Source]: ``(ann_file, img_dir, color_type, classes)``, one per dataset.

    Raises:
        DatasetInputError: When the config cannot be read or names no annotation file.
    """
    return check_config(config, split, data_root)[0]


def check_config(config: str, split: str, data_root: Optional[str] = None
                 ) -> Tuple[List[Source], Tuple[List[str], List[str]]]:
    """What to check of a config's split, and what is wrong with the config itself.

    The config is read as our tools read it (``--data-root`` rewrites the evaluators' files
    too). Its errors are that the heads' and datasets' numbers of classes disagree (or classes
    cannot be read), which would stop training, and, for ``val`` and ``test``, that an
    ``<split>_evaluator.ann_file`` is missing or lacks the split's images, which would stop
    the evaluation (``ms_rcnn.utils.config.evaluator_mismatches``). They are reported with the
    data's problems (exit status 1), not instead of them.

    Returns:
        tuple: The sources (see :func:`sources_from_config`) and the config's (errors,
        warnings).

    Raises:
        DatasetInputError: When the config cannot be read or names no annotation file.
    """
    if not osp.isfile(config):
        raise DatasetInputError(f'config file {config} not found')
    try:
        cfg = load_config(config, data_root=data_root, check_classes=False)
    except FileNotFoundError as exc:
        raise DatasetInputError(f'{config}: {exc}')
    except Exception as exc:  # noqa: BLE001  any failure to parse is reported, not raised
        raise DatasetInputError(f'cannot read config {config}: {type(exc).__name__}: {exc}')
    loader = cfg.get(f'{split}_dataloader')
    if not isinstance(loader, dict):
        raise DatasetInputError(f'config {config} has no {split}_dataloader')
    datasets = [d for d in dataset_cfgs(loader.get('dataset')) if d.get('ann_file')]
    if not datasets:
        raise DatasetInputError(f'{split}_dataloader.dataset in {config} has no ann_file')
    class_errors, sources = [], []
    for dataset in datasets:
        try:
            classes = dataset_classes(dataset)
        except ConfigError as exc:
            classes = None
            class_errors.append(f'{config}: {split}_dataloader.dataset: {exc}')
        sources.append(_dataset_source(dataset, data_root, classes))
    if not class_errors:  # else check_num_classes would only repeat the first of them
        try:
            check_num_classes(cfg)
        except ConfigError as exc:
            class_errors.append(f'{config}: {exc}')
    errors, warnings = evaluator_mismatches(cfg, split) if split != 'train' else ([], [])
    return sources, (class_errors + errors, warnings)


def class_problems(source: Source, ann: Any) -> Tuple[List[str], List[str]]:
    """Errors and warnings about a config dataset's classes against its file's categories."""
    if source.classes is None or not isinstance(ann, dict) \
            or not isinstance(ann.get('categories'), list):
        return [], []
    categories = [c for c in ann['categories'] if isinstance(c, dict)]
    problem = class_mismatch(source.classes, categories)
    if problem is not None:
        return [problem], []
    annotations = ann.get('annotations') if isinstance(ann.get('annotations'), list) else []
    warning = left_out_warning(source.classes, categories, annotations)
    return [], [warning] if warning is not None else []


def emptiness_errors(source: Source, ann: Any) -> List[str]:
    """Errors for a dataset that would have no image: training and evaluation stop on it."""
    if not isinstance(ann, dict) or not isinstance(ann.get('images'), list):
        return []
    if not ann['images']:
        return ['the file lists no images, so the dataset would be empty']
    images = [i for i in ann['images'] if isinstance(i, dict)]
    if source.filter_empty_gt:
        annotated = images_with_classes(ann, source.classes)
        images = [i for i in images if is_id(i.get('id')) and i['id'] in annotated]
        if not images:
            return ['filter_cfg.filter_empty_gt=True keeps only images with an annotation of '
                    'the classes, and no image has one: training would have no image']
    if source.min_size > 0 and images and not any(
            not_smaller(i, source.min_size) for i in images):
        kept = ' with an annotation of the classes' if source.filter_empty_gt else ''
        return [f'filter_cfg.min_size={source.min_size} keeps only images of at least that many '
                f'pixels on a side, and every image{kept} is smaller: training would have no '
                'image']
    return []


def images_with_classes(ann: dict, classes: Optional[tuple]) -> set:
    """Ids of the file's images with an annotation of ``classes`` (of any category if None)."""
    image_ids = {i.get('id') for i in ann['images'] if isinstance(i, dict) and is_id(i.get('id'))}
    categories = [c for c in ann.get('categories') or [] if isinstance(c, dict)]
    wanted = {c.get('id') for c in categories if is_id(c.get('id'))
              and (classes is None or c.get('name') in classes)}
    annotations = ann.get('annotations') if isinstance(ann.get('annotations'), list) else []
    return {a['image_id'] for a in annotations
            if isinstance(a, dict) and is_id(a.get('image_id')) and a['image_id'] in image_ids
            and is_id(a.get('category_id')) and a['category_id'] in wanted}


def not_smaller(image: dict, min_size: float) -> bool:
    """Whether mmdet's ``min_size`` filter keeps ``image``; an image without numeric sizes
    counts as kept (the size check reports it)."""
    width, height = image.get('width'), image.get('height')
    if not (is_finite_number(width) and is_finite_number(height)):
        return True
    return min(width, height) >= min_size


def summarize(problems: Sequence[Problem]) -> Dict[str, Dict[str, int]]:
    """Problem counts per kind, grouped by severity (``{'error': {kind: n}, ...}``)."""
    summary: Dict[str, Dict[str, int]] = {ERROR: {}, WARNING: {}}
    for (severity, kind), count in sorted(Counter((p.severity, p.kind)
                                                  for p in problems).items()):
        summary[severity][kind] = count
    return summary


def _report_text(ann_file: str, img_dir: Optional[str], ann: Any,
                 problems: Sequence[Problem], max_print: int) -> str:
    """The human-readable report of one checked annotation file."""
    sections = ann if isinstance(ann, dict) else {}
    sizes = ', '.join(f'{key}: {len(sections[key]) if isinstance(sections.get(key), list) else 0}'
                      for key in ('images', 'annotations', 'categories'))
    lines = [f'{ann_file}: {sizes}' + (f' (images in {img_dir})' if img_dir else '')]
    summary = summarize(problems)
    lines.append(f'  {sum(summary[ERROR].values())} error(s), '
                 f'{sum(summary[WARNING].values())} warning(s)')
    for severity in (ERROR, WARNING):
        lines += [f'    {severity:<7}  {kind:<26} {count}'
                  for kind, count in summary[severity].items()]
    ordered = sorted(problems, key=lambda p: p.severity != ERROR)
    lines += [f'  {p}' for p in ordered[:max(max_print, 0)]]
    if len(ordered) > max_print:
        lines.append(f'  ... {len(ordered) - max(max_print, 0)} more not shown '
                     f'(raise --max-print or use --json)')
    return '\n'.join(lines)


def _report_json(ann_file: str, img_dir: Optional[str],
                 problems: Sequence[Problem]) -> Dict[str, Any]:
    """The machine-readable report of one checked annotation file."""
    return dict(ann_file=ann_file, img_dir=img_dir, summary=summarize(problems),
                problems=[asdict(p) for p in problems])


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description='Check a COCO-style instance segmentation dataset and list every problem.')
    parser.add_argument('source', help='annotation JSON file, or an mmdet config with --split')
    parser.add_argument('img_dir', nargs='?', help='image directory (with an annotation file)')
    parser.add_argument('--split', choices=['train', 'val', 'test'],
                        help='read <split>_dataloader.dataset of the config SOURCE')
    parser.add_argument('--data-root', help='with a config: data root to use instead of its own')
    parser.add_argument('--max-print', type=int, default=50,
                        help='print at most N problems per annotation file (default 50)')
    parser.add_argument('--json', metavar='OUT.json', help='also write the full report as JSON')
    parser.add_argument('--skip-images', action='store_true',
                        help='do not open the image files')
    parser.add_argument('--no-masks', action='store_true',
                        help='do not require a segmentation on every annotation')
    parser.add_argument('--ignore-exif-orientation', action='store_true',
                        help="compare the stored pixels' size, not the EXIF-turned one (as "
                        "LoadImageFromFile(color_type='color_ignore_orientation'); a config "
                        'with that pipeline implies it)')
    args = parser.parse_args(argv)
    if args.split is None and args.source.endswith('.py'):
        args.split = 'train'
    if args.split is not None and args.img_dir is not None:
        parser.error('give either ANN_FILE IMG_DIR or CONFIG --split, not both')
    if args.split is None and args.data_root is not None:
        parser.error('--data-root goes with CONFIG --split; with ANN_FILE IMG_DIR give the '
                     'paths themselves')
    if args.split is None and args.img_dir is None and not args.skip_images:
        parser.error('IMG_DIR is required with an annotation file (unless --skip-images)')
    return args


def _resolve_sources(args: argparse.Namespace
                     ) -> Tuple[List[Source], Tuple[List[str], List[str]]]:
    """What to check for the parsed command line, and the config's own (errors, warnings)."""
    if args.split is not None:
        sources, config_problems = check_config(args.source, args.split, args.data_root)
    else:
        sources, config_problems = [Source(args.source, args.img_dir)], ([], [])
    if args.ignore_exif_orientation:
        sources = [source._replace(color_type='color_ignore_orientation') for source in sources]
    return sources, config_problems


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the checker from the command line.

    Args:
        argv (Sequence[str] | None): Arguments (default: ``sys.argv[1:]``).

    Returns:
        int: 0 without errors, 1 with errors, 2 when an input cannot be read.
    """
    args = parse_args(argv)
    try:
        sources, config_problems = _resolve_sources(args)
        loaded = [(source, load_annotation_file(source.ann_file)) for source in sources]
    except DatasetInputError as exc:
        return unreadable(args, [str(exc)])
    if not args.skip_images:
        missing = sorted({s.img_dir for s, _ in loaded
                          if s.img_dir is not None and not osp.isdir(s.img_dir)})
        if missing:
            return unreadable(args, [f'image directory {d} does not exist' for d in missing])
    reports, num_errors = [], 0
    for source, ann in loaded:
        ann_file, img_dir = source.ann_file, source.img_dir
        problems = check_coco(ann, img_dir, check_images=not args.skip_images,
                              expect_masks=not args.no_masks, color_type=source.color_type)
        num_errors += sum(p.severity == ERROR for p in problems)
        print(_report_text(ann_file, img_dir, ann, problems, args.max_print))
        report = _report_json(ann_file, img_dir, problems)
        dataset_errors = emptiness_errors(source, ann)
        class_errors, class_warnings = class_problems(source, ann)
        for message in dataset_errors + class_errors:
            print(f'  error    {message}')
        for message in class_warnings:
            print(f'  warning  {message}')
        num_errors += len(dataset_errors) + len(class_errors)
        report.update(dataset_errors=dataset_errors, class_errors=class_errors,
                      class_warnings=class_warnings)
        reports.append(report)
    config_errors, config_warnings = config_problems
    for message in config_errors:
        print(f'error: {message}')
    for message in config_warnings:
        print(f'warning: {message}')
    num_errors += len(config_errors)
    status = 1 if num_errors else 0
    if args.json and not write_report(args.json, dict(
            status=status, reports=reports, config_errors=config_errors,
            config_warnings=config_warnings, errors=num_errors)):
        return 2
    print('FAILED: dataset has errors' if num_errors else 'OK: no errors')
    return status


def unreadable(args: argparse.Namespace, messages: List[str]) -> int:
    """Report inputs that cannot be read (status 2), in ``--json`` too, so that a report of an
    earlier run is not left there to be read as this one's."""
    for message in messages:
        print(f'error: {message}', file=sys.stderr)
    if args.json:
        write_report(args.json, dict(status=2, input_errors=messages, reports=[], errors=None))
    return 2


def write_report(path: str, report: Dict[str, Any]) -> bool:
    """Write the ``--json`` report atomically (strict JSON); False, with a message, if the
    file cannot be written."""
    try:
        write_json(path, report)
    except OSError as exc:
        print(f'error: cannot write {path}: {exc.strerror or exc}', file=sys.stderr)
        return False
    return True


if __name__ == '__main__':
    sys.exit(main())
