"""COCO metric that evaluates boxes and masks by their own scores."""
import logging
from typing import Dict, List, Optional, Sequence

from mmdet.evaluation import CocoMetric
from mmengine.logging import print_log

from ..datasets.bad_data_policy import BadDatasetError
from ..datasets.coco_checks import is_finite_number, is_id, same_file
from ..registry import METRICS
from ..utils.config import ConfigError


@METRICS.register_module()
class MaskScoringCocoMetric(CocoMetric):
    """mmdet's ``CocoMetric`` with Mask Scoring R-CNN's protocol.

    Boxes are ranked by the classification score (``pred_instances.bbox_scores``) and masks by
    the mask score (``pred_instances.scores``), as in the paper. Predictions without
    ``bbox_scores`` (e.g. a plain Mask R-CNN) are evaluated exactly as ``CocoMetric`` does.
    Takes the arguments of :class:`mmdet.evaluation.CocoMetric`.

    The annotation file is checked when the metric is built (before training starts): an
    annotation without a usable value of a field COCOeval reads is refused with an error
    naming the file, instead of an error inside pycocotools after the whole run. Each evaluated
    image must be the file's image of the same id (same file name), so an evaluator left
    pointing at another dataset's file stops at the first batch instead of failing after the
    whole run or, where the ids overlap, reporting the AP of other images' ground truth.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._ann_file = kwargs.get('ann_file', args[0] if args else None)
        if self._coco_api is not None and not self.format_only:
            check_evaluable(self._coco_api, self._ann_file, self.metrics)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Store each image's results, with box and mask scores kept apart.

        Raises:
            ConfigError: An image is not in the annotation file, or under another file name
                (the evaluator's ``ann_file`` is not the dataset's), or a predicted label has
                no class in the dataset (the heads' num_classes exceed the dataset's classes)
                or no category in the annotation file (a class name missing from it), named
                here rather than after the whole run.
        """
        if self._coco_api is not None:
            for sample in data_samples:
                self._check_image_in_file(sample['img_id'], sample.get('img_path'))
        classes = (self.dataset_meta or {}).get('classes')
        if classes is not None:
            self._check_classes_in_file(tuple(classes))
            for sample in data_samples:
                labels = sample['pred_instances'].get('labels')
                if labels is not None and len(labels):
                    self._check_label(int(labels.max()), tuple(classes))
        super().process(data_batch, data_samples)
        stored = self.results[len(self.results) - len(data_samples):]
        for (_, result), sample in zip(stored, data_samples):
            pred = sample['pred_instances']
            if 'bbox_scores' in pred:
                result['mask_scores'] = result['scores']
                result['scores'] = pred['bbox_scores'].detach().cpu().numpy()

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """mmdet's metrics, after a warning when the results cover only part of the file.

        COCOeval scores every image of the annotation file, so the ground truth of images
        that were not evaluated (a dataset of a subset of the file) counts as missed.
        """
        if self._coco_api is not None and not self.format_only:
            evaluated = {gt['img_id'] for gt, _ in results}
            total = len(self._coco_api.imgs)
            if len(evaluated) < total:
                print_log(f'{self._ann_file}: the results cover {len(evaluated)} of its {total} '
                          f'images; COCO AP counts the ground truth of the other '
                          f'{total - len(evaluated)} as missed (evaluate with an annotation file '
                          f'of only the evaluated images for their AP)',
                          logger='current', level=logging.WARNING)
        return super().compute_metrics(results)

    def _check_image_in_file(self, img_id: int, img_path: Optional[str]) -> None:
        """Refuse an image that the annotation file lacks or names otherwise.

        Raises:
            ConfigError: No image of the file has ``img_id``, or it has another file name.
        """
        fix = ('the evaluator\'s ann_file must be the annotation file of the dataset it '
               'evaluates (val_evaluator.ann_file, test_evaluator.ann_file; --data-root sets '
               'both)')
        entry = self._coco_api.imgs.get(img_id)
        if entry is None:
            raise ConfigError(f'{self._ann_file}: no image has id {img_id!r}, the dataset\'s '
                              f'image {img_path or ""}: {fix}')
        file_name = entry.get('file_name')
        if img_path and isinstance(file_name, str) and not same_file(img_path, file_name):
            raise ConfigError(f'{self._ann_file}: image id {img_id!r} is {file_name!r} there '
                              f'but {img_path} in the dataset: {fix}')

    def _check_label(self, label: int, classes: tuple) -> None:
        """Refuse a predicted label that has no class in the dataset.

        Raises:
            ConfigError: ``label`` is beyond ``classes``.
        """
        if label >= len(classes):
            raise ConfigError(
                f'the model predicted class index {label}, but the dataset has '
                f'{len(classes)} classes {classes}: set num_classes of the heads in '
                f'the config to {len(classes)}, or the dataset\'s metainfo classes')

    def _check_classes_in_file(self, classes: tuple) -> None:
        """Refuse classes whose results could not be written, or not written right.

        mmdet writes label ``i`` as the ``i``-th category id of the annotation file among
        those named in ``classes``. A class name missing from the file leaves fewer ids than
        classes and shifts the ones after it: results land in other categories than the
        labels were trained on (when the training file has the class), or the conversion
        fails with an ``IndexError`` after the whole run.

        Raises:
            ConfigError: A class name is no category of the file.
        """
        if self._coco_api is None:
            return  # the ground truth is built from the dataset itself, one id per class
        names = {cat['name'] for cat in self._coco_api.cats.values()}
        missing = [name for name in classes if name not in names]
        if missing:
            raise ConfigError(
                f'{self._ann_file}: the dataset\'s classes {", ".join(map(repr, missing))} are '
                f'no categories of this file (it has {sorted(names)}), so the results of the '
                f'classes after them would be written under other categories. Fix the metainfo '
                f'classes (ms_rcnn.CheckedCocoDataset refuses this when the dataset is built).')


def check_evaluable(coco, ann_file: str, metrics: Sequence[str]) -> None:
    """Refuse ground truth that COCOeval would stop on, or silently miscount, after the run.

    Args:
        coco (pycocotools.coco.COCO): The loaded annotation file.
        ann_file (str): The file, for the message.
        metrics (Sequence[str]): The metrics to compute (``'bbox'``, ``'segm'``, ...).

    Raises:
        BadDatasetError: Some annotation of an image of the file lacks a field these metrics
            read, or has one COCOeval cannot use (:func:`unusable_fields`); names the file,
            the fields and the annotation ids.
    """
    needed = ['area', 'iscrowd']
    if {'bbox', 'proposal', 'proposal_fast'} & set(metrics):
        needed.append('bbox')
    if 'segm' in metrics:
        needed.append('segmentation')
    annotations = [ann for ann in coco.dataset.get('annotations', [])  # COCOeval reads these
                   if is_id(ann.get('image_id')) and ann['image_id'] in coco.imgs]
    unusable = unusable_fields(annotations, needed, coco)
    if unusable:
        details = '; '.join(
            f'{len(ids)} without a usable {field!r} (ids {", ".join(map(str, ids[:5]))}'
            f'{", ..." if len(ids) > 5 else ""})' for field, ids in unusable.items())
        raise BadDatasetError(
            f'{ann_file}: COCO evaluation needs a usable {", ".join(needed)} in every '
            f'annotation: {details}. Fix the file (tools/check_dataset.py lists every problem; '
            f'see docs/bad_data.md).')


def unusable_fields(annotations: List[dict], fields: Sequence[str], coco=None) -> Dict[str, list]:
    """The ids of the annotations whose value of each field COCOeval cannot use.

    A field is unusable when it is missing; an ``area`` also when it is not a finite number
    (a NaN area falls in every area range), a ``bbox`` when it is not four finite numbers, a
    ``segmentation`` when it is empty or pycocotools cannot turn it into a mask (checked with
    ``coco.annToRLE``, as COCOeval converts it, where ``coco`` is given).

    Args:
        annotations (list[dict]): COCO annotations.
        fields (Sequence[str]): Fields every annotation must have.
        coco (pycocotools.coco.COCO, optional): The file, holding the annotations' images.

    Returns:
        dict: ``{field: [annotation ids]}`` for the fields some annotation cannot use.
    """
    unusable: Dict[str, list] = {}
    for ann in annotations:
        for field in fields:
            if not usable_field(ann, field, coco):
                unusable.setdefault(field, []).append(ann.get('id'))
    return unusable


def usable_field(ann: dict, field: str, coco=None) -> bool:
    """Whether COCOeval can use ``ann[field]`` (see :func:`unusable_fields`)."""
    value = ann.get(field)
    if value is None:
        return False
    if field == 'area':
        return is_finite_number(value)
    if field == 'bbox':
        return (isinstance(value, (list, tuple)) and len(value) == 4
                and all(map(is_finite_number, value)))
    if field == 'segmentation':
        if value in ([], {}):
            return False
        if coco is None:
            return True
        try:
            coco.annToRLE(ann)
        except Exception:  # whatever pycocotools raises on it, COCOeval would raise too
            return False
    return True
