"""A COCO instance dataset that checks its data and applies ms_rcnn's bad-data policy.

``type='ms_rcnn.CheckedCocoDataset'`` takes the same arguments as mmdet's ``CocoDataset``,
plus the three below. Our configs use it for train, val and test. What it does with each kind
of problem is :data:`ms_rcnn.datasets.bad_data_policy.POLICY`; ``docs/bad_data.md`` explains it.

- While the dataset is built, the annotation file goes through
  :func:`~ms_rcnn.datasets.bad_data_policy.clean_coco`: problems that make the data unusable
  raise :class:`BadDatasetError` listing all of them; bad instances are dropped or repaired with
  a warning that names each (image file and annotation id). The checked dict feeds mmdet's
  loader directly (the file is read once).
- While images are loaded, a file that cannot be decoded or whose size differs from the
  annotation file's raises :class:`BadImageError` naming it. In training the image is skipped
  with a warning (mmengine then draws another one); in evaluation the error stops the run,
  since results for every image are needed.
"""
import logging
from typing import Any, Callable, List, Optional, Set

from mmcv.transforms import LoadImageFromFile
from mmdet.datasets import CocoDataset
from mmengine.fileio import get_local_path
from mmengine.logging import print_log

from ..registry import DATASETS
from .bad_data_policy import (CLIP_BOX, DROP_INSTANCE, DROP_PARTS, FILL_AREA, FILL_ISCROWD,
                              KEEP, BadDatasetError, CleanReport, clean_coco, format_problems)
from .coco_checks import class_mismatch, left_out_warning, load_annotation_file, size_mismatch

_WARNED_ACTIONS = {
    DROP_INSTANCE: 'instances dropped',
    DROP_PARTS: 'unusable polygons removed (the rest of each mask kept)',
    CLIP_BOX: 'boxes clipped to the image',
    FILL_AREA: 'missing area set to the box area',
    FILL_ISCROWD: 'missing iscrowd set to 0 (not a crowd)',
    KEEP: 'trained on as they are',
}


class BadImageError(RuntimeError):
    """An image file that cannot be used as the annotation file describes it.

    Attributes:
        path (str): The image file.
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f'{path}: {reason}. Check the dataset with tools/check_dataset.py.')
        self.path = path
        self.reason = reason

    def __reduce__(self):  # picklable: the default would call cls(message) with one argument
        return type(self), (self.path, self.reason)


class CheckedImageLoading:
    """Wraps a pipeline's image-loading transform with a readable error naming the file.

    Raises :class:`BadImageError` when loading fails or when the decoded image's
    ``(height, width)`` differs from the ``height``/``width`` of the sample's annotation entry
    (masks rasterised at the image's size would not line up with the annotation file's boxes).
    """

    def __init__(self, load: Callable[[dict], Optional[dict]]):
        self.load = load

    def __call__(self, results: dict) -> Optional[dict]:
        path = results.get('img_path')
        expected = (results.get('height'), results.get('width'))
        try:
            out = self.load(results)
        except Exception as exc:  # noqa: BLE001  any decoder or I/O failure names the file
            raise BadImageError(path, f'cannot be read ({type(exc).__name__}: {exc})') from exc
        if out is None or None in expected:
            return out
        mismatch = size_mismatch(out['ori_shape'][:2], expected)
        if mismatch is not None:
            raise BadImageError(path, mismatch)
        return out

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.load!r})'


def check_image_loading(transforms: List[Callable]) -> bool:
    """Wrap the first ``LoadImageFromFile`` of a transform list in place.

    Returns:
        bool: Whether one was found.
    """
    for i, transform in enumerate(transforms):
        if isinstance(transform, CheckedImageLoading):
            return True
        if isinstance(transform, LoadImageFromFile):
            transforms[i] = CheckedImageLoading(transform)
            return True
    return False


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` with the checks and policy of ``docs/bad_data.md``.

    Args:
        check_annotations (bool): Check and clean the annotation file as it is loaded.
            Defaults to True.
        check_image_files (bool): Stop when image files are missing (checked with one
            ``stat`` per image, for local paths). Defaults to True.
        max_listed (int): Problems listed per kind in warnings and errors (all are counted).
            Defaults to 10.
        *args, **kwargs: mmdet's ``CocoDataset`` arguments.

    Attributes:
        clean_report (CleanReport | None): What the checks found and did.
        skipped_images (set[str]): Images skipped in training by this process. Each
            dataloader worker holds its own copy (the main process's stays empty when workers
            load the data), and workers that are not persistent start every epoch with an
            empty one: the warning is given once per file in each worker, per epoch then.
    """

    def __init__(self, *args: Any, check_annotations: bool = True,
                 check_image_files: bool = True, max_listed: int = 10, **kwargs: Any):
        self.check_annotations = check_annotations
        self.check_image_files = check_image_files
        self.max_listed = max_listed
        self.clean_report: Optional[CleanReport] = None
        self.skipped_images: Set[str] = set()
        super().__init__(*args, **kwargs)
        if not check_image_loading(self.pipeline.transforms):
            print_log(f'{type(self).__name__}: no LoadImageFromFile in the pipeline, so images '
                      'are not checked as they load', logger='current', level=logging.DEBUG)

    def _expects_masks(self) -> bool:
        return any(getattr(t, 'with_mask', False) for t in self.pipeline.transforms)

    def _polygon_masks_only(self) -> bool:
        """Whether the pipeline loads masks as polygons (``poly2mask=False``)."""
        return any(getattr(t, 'with_mask', False) and not getattr(t, 'poly2mask', True)
                   for t in self.pipeline.transforms)

    def _warn_rle_ignored(self, annotations: List[dict]) -> None:
        """``LoadAnnotations(poly2mask=False)`` ignores non-crowd RLE masks without a word."""
        ids = [ann.get('id') for ann in annotations
               if isinstance(ann.get('segmentation'), dict) and not ann.get('iscrowd', 0)]
        if ids:
            print_log(f'{self.ann_file}: {len(ids)} non-crowd instance(s) have RLE masks, which '
                      f'LoadAnnotations(poly2mask=False) ignores in training (annotation ids '
                      f'{ids[:self.max_listed]}{" ..." if len(ids) > self.max_listed else ""}); '
                      f'use poly2mask=True to train on them',
                      logger='current', level=logging.WARNING)

    def _image_dir(self) -> Optional[str]:
        """Where to ``stat`` the images: only local files (no remote backend or mapping)."""
        img_dir = self.data_prefix.get('img', '')
        remote = '://' in img_dir or (self.backend_args or {}).get('backend', 'local') != 'local' \
            or bool((self.backend_args or {}).get('path_mapping'))
        return None if remote or not self.check_image_files else img_dir

    def load_data_list(self) -> List[dict]:
        """Check and clean the annotation file, then load it as mmdet does."""
        if not self.check_annotations:
            return super().load_data_list()
        with get_local_path(self.ann_file, backend_args=self.backend_args) as local_path:
            data = load_annotation_file(local_path)
        report = clean_coco(data, expect_masks=self._expects_masks(), img_dir=self._image_dir())
        if report.stops:
            raise BadDatasetError(
                f'{self.ann_file}: {len(report.stops)} problem(s) make this dataset unusable '
                f'for training (see docs/bad_data.md; tools/check_dataset.py lists '
                f'everything):\n{format_problems(report.stops, self.max_listed)}')
        self._log_actions(report)
        if self._polygon_masks_only():
            self._warn_rle_ignored(report.data.get('annotations', []))
        self.clean_report = report
        mmdet_api = self.COCOAPI
        self.COCOAPI = lambda _path: coco_from_dict(mmdet_api, report.data)
        try:
            data_list = super().load_data_list()
            self._check_classes(report.data.get('categories', []),
                                report.data.get('annotations', []))
            return data_list
        finally:
            del self.COCOAPI  # back to the class attribute
            report.data = None  # mmdet keeps no raw annotations either (workers copy them)

    def filter_data(self) -> List[dict]:
        """mmdet's filtering, refusing a dataset that it leaves without images.

        Raises:
            BadDatasetError: The file lists no images, or ``filter_cfg`` (in training) leaves
                out every one; mmengine would stop later with a bare ``ValueError``.
        """
        kept = super().filter_data()
        if kept:
            return kept
        if not self.data_list:
            raise BadDatasetError(f'{self.ann_file}: the file lists no images, so the dataset '
                                  f'is empty')
        raise BadDatasetError(
            f'{self.ann_file}: filter_cfg {dict(self.filter_cfg)} leaves out all '
            f'{len(self.data_list)} images (with filter_empty_gt, only images with an '
            f'annotation of the classes {tuple(self.metainfo["classes"])} are kept)')

    def _check_classes(self, categories: List[dict], annotations: List[dict]) -> None:
        """Refuse ``metainfo`` classes that do not match the file; say what the file has more.

        mmdet labels each instance by its category's place among the file's categories named
        in ``classes`` (in the file's order), but names label ``i`` ``classes[i]``: a missing
        name silently drops that class and shifts the rest, another order misnames every
        prediction (and mmdet's evaluators write results under the file's order), and two
        categories of one name take two labels. Categories the classes leave out are dropped
        with their annotations, which is how a subset of classes is trained: a warning says so.

        Raises:
            BadDatasetError: A class is no category of the file, is the name of several, or the
                classes are in another order than the file's categories.
        """
        classes = list(self.metainfo['classes'])
        problem = class_mismatch(classes, categories)
        if problem is not None:
            raise BadDatasetError(f'{self.ann_file}: {problem}')
        warning = left_out_warning(classes, categories, annotations)
        if warning is not None:
            print_log(f'{self.ann_file}: {warning}', logger='current', level=logging.WARNING)

    def _log_actions(self, report: CleanReport) -> None:
        for action, verb in _WARNED_ACTIONS.items():
            problems = [p for p, done in report.actions if done == action]
            if problems:
                print_log(f'{self.ann_file}: {len(problems)} problem(s), {verb} '
                          f'(docs/bad_data.md):\n'
                          f'{format_problems(problems, self.max_listed)}',
                          logger='current', level=logging.WARNING)

    def prepare_data(self, idx: int) -> Any:
        """The pipeline's output; in training, None (skip) for an unusable image."""
        try:
            return super().prepare_data(idx)
        except BadImageError as exc:
            if self.test_mode:
                raise
            if exc.path not in self.skipped_images:
                self.skipped_images.add(exc.path)
                print_log(f'skipping an image in training: {exc}', logger='current',
                          level=logging.WARNING)
            return None


def coco_from_dict(api: type, data: dict) -> Any:
    """An mmdet/pycocotools ``COCO`` object indexed from an annotation dict."""
    coco = api()
    coco.dataset = data
    coco.createIndex()
    # mmdet's wrapper aliases these at construction; point them at the new index.
    coco.img_ann_map = coco.imgToAnns
    coco.cat_img_map = coco.catToImgs
    return coco
