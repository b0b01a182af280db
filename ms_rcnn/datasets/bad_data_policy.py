"""What training does with each kind of bad annotation: the policy, as pure functions.

:func:`clean_coco` takes a parsed COCO annotation dict, runs the checks of
:mod:`ms_rcnn.datasets.coco_checks` and returns a cleaned copy plus what it did and what must
stop the run. :class:`ms_rcnn.datasets.CheckedCocoDataset` applies it while a dataset is built;
``docs/bad_data.md`` gives the reasons for each choice.

Actions, per problem kind (:data:`POLICY`):

- ``stop``: the dataset cannot be trained on as it is (ids that collide, entries without the
  fields every reader needs, image files that are not there). Building the dataset raises
  :class:`BadDatasetError`, which lists every such problem, before any training.
- ``drop_instance``: the annotation is removed and a warning names it (image file and
  annotation id). MMDetection would drop most of these silently, or crash on the rest.
- ``drop_parts``: the unusable polygons of a multi-part mask are removed; if none is left the
  instance is dropped.
- ``clip_box``: the box is clipped to the image (the mask is clipped by rasterisation anyway).
- ``fill_area``: a missing ``area`` becomes the box area (mmdet only tests it for > 0).
- ``fill_iscrowd``: a missing ``iscrowd`` becomes 0, as mmdet reads it.
- ``keep``: trainable as it is; a warning is logged.
- ``note``: normal in real datasets (an image without annotations); counted, not warned.
- ``skip_image``: found only when the image is decoded; see ``CheckedCocoDataset``.
"""
import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import coco_checks as checks
from .coco_checks import Problem

STOP = 'stop'
DROP_INSTANCE = 'drop_instance'
DROP_PARTS = 'drop_parts'
CLIP_BOX = 'clip_box'
FILL_AREA = 'fill_area'
FILL_ISCROWD = 'fill_iscrowd'
KEEP = 'keep'
NOTE = 'note'
SKIP_IMAGE = 'skip_image'

#: The action of each problem kind of :data:`ms_rcnn.datasets.coco_checks.SEVERITY`.
POLICY: Dict[str, str] = {
    'invalid_structure': STOP,
    'invalid_category_entry': STOP,
    'duplicate_category_id': STOP,
    'duplicate_category_name': KEEP,  # a dataset whose classes name it stops (class_mismatch)
    'invalid_image_entry': STOP,
    'duplicate_image_id': STOP,
    'duplicate_file_name': KEEP,
    'image_missing': STOP,
    'image_unreadable': SKIP_IMAGE,
    'image_size_mismatch': SKIP_IMAGE,
    'image_without_annotations': NOTE,
    'invalid_annotation_entry': DROP_INSTANCE,
    'duplicate_annotation_id': STOP,
    'unknown_image_id': DROP_INSTANCE,
    'unknown_category_id': DROP_INSTANCE,
    'nonfinite_coordinates': DROP_INSTANCE,
    'bbox_invalid': DROP_INSTANCE,
    'bbox_nonpositive_size': DROP_INSTANCE,
    'bbox_too_small': DROP_INSTANCE,
    'bbox_out_of_bounds': CLIP_BOX,
    'area_invalid': DROP_INSTANCE,  # FILL_AREA when the field is absent
    'iscrowd_invalid': DROP_INSTANCE,  # FILL_ISCROWD when the field is absent
    'segmentation_missing': DROP_INSTANCE,
    'segmentation_invalid': DROP_INSTANCE,
    'rle_size_mismatch': DROP_INSTANCE,
    'polygon_too_few_points': DROP_PARTS,
    'polygon_odd_length': DROP_PARTS,
    'mask_zero_area': DROP_INSTANCE,
    'polygon_zero_area_part': KEEP,
}


class BadDatasetError(ValueError):
    """The annotation file (or its images) cannot be trained on; the message lists why."""


@dataclass
class CleanReport:
    """What :func:`clean_coco` found and did.

    Attributes:
        data (dict | None): The cleaned annotation dict (the input is not modified); the
            dataset releases it once loaded.
        stops (list[Problem]): Problems whose action is ``stop``; the data is unusable.
        actions (list[tuple[Problem, str]]): Every other problem with the action taken.
    """

    data: Optional[dict]
    stops: List[Problem] = field(default_factory=list)
    actions: List[Tuple[Problem, str]] = field(default_factory=list)

    def count(self, action: str) -> int:
        """Number of problems handled with ``action``."""
        return sum(1 for _, done in self.actions if done == action)


def usable_polygon(polygon: Any) -> bool:
    """Whether one polygon of a mask is usable: a flat list of >= 6 finite numbers, even."""
    return (isinstance(polygon, list) and len(polygon) >= 6 and len(polygon) % 2 == 0
            and all(checks.is_number(v) for v in polygon) and checks.all_finite(polygon))


def clip_bbox(bbox: Sequence[float], height: int, width: int) -> List[float]:
    """Clip an ``[x, y, w, h]`` box to a ``width`` x ``height`` image.

    Args:
        bbox (Sequence[float]): Box as ``[x, y, w, h]`` in pixels.
        height (int): Image height.
        width (int): Image width.

    Returns:
        list[float]: The clipped ``[x, y, w, h]`` (width or height 0 when it lies outside).
    """
    x, y, w, h = bbox
    x1, y1 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x2, y2 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return [x1, y1, max(x2 - x1, 0.0), max(y2 - y1, 0.0)]


def problem_action(ann: dict, problem: Problem) -> str:
    """The action for one problem of an annotation: :data:`POLICY`'s, or a fill."""
    if problem.kind == 'area_invalid' and ann.get('area') is None:
        return FILL_AREA
    if problem.kind == 'iscrowd_invalid' and 'iscrowd' not in ann:
        return FILL_ISCROWD
    return POLICY[problem.kind]


def _most_severe(actions: Sequence[str]) -> str:
    """The one action for an annotation whose problems call for these actions."""
    for action in (DROP_INSTANCE, DROP_PARTS, CLIP_BOX, FILL_AREA, FILL_ISCROWD, KEEP):
        if action in actions:
            return action
    return KEEP


def _repair(ann: dict, image: dict, problems: List[Problem]) -> Optional[dict]:
    """A repaired copy of an annotation, or None when it must be dropped."""
    kinds = {p.kind for p in problems}
    fixed = copy.copy(ann)
    if kinds & {'polygon_too_few_points', 'polygon_odd_length'}:
        fixed['segmentation'] = [p for p in ann['segmentation'] if usable_polygon(p)]
        if not fixed['segmentation']:
            return None
    if 'bbox_out_of_bounds' in kinds:
        fixed['bbox'] = clip_bbox(ann['bbox'], image['height'], image['width'])
        if fixed['bbox'][2] < 1 or fixed['bbox'][3] < 1:  # what mmdet would drop silently
            return None
    if fixed.get('area') is None:
        fixed['area'] = float(fixed['bbox'][2] * fixed['bbox'][3])
    fixed.setdefault('iscrowd', 0)
    return fixed


def clean_coco(data: Any, expect_masks: bool = True,
               img_dir: Optional[str] = None) -> CleanReport:
    """Check a COCO annotation dict and apply :data:`POLICY` to what is found.

    Args:
        data (dict): The parsed annotation file (not modified).
        expect_masks (bool): Whether instances need a segmentation (mask training).
        img_dir (str | None): When given, image files are checked for existence (not decoded).

    Returns:
        CleanReport: The cleaned dict, the problems that stop training, the actions taken.
    """
    stops = checks.check_structure(data)
    if stops:
        return CleanReport(data=data, stops=stops)
    cat_ids, problems = checks.check_categories(data['categories'])
    images_by_id, image_problems = checks.index_images(data['images'])
    problems += image_problems
    if img_dir is not None:
        problems += checks.check_image_files(data['images'], img_dir, decode=False)
    problems += checks.check_images_without_annotations(images_by_id, data['annotations'])
    problems += checks.check_duplicate_annotation_ids(data['annotations'], images_by_id)
    report = CleanReport(data=data)
    for problem in problems:
        if POLICY[problem.kind] == STOP:
            report.stops.append(problem)
        else:
            report.actions.append((problem, POLICY[problem.kind]))

    kept = []
    for index, ann in enumerate(data['annotations']):
        found = checks.check_annotation(index, ann, images_by_id, cat_ids, expect_masks)
        if not found:
            kept.append(ann)
            continue
        actions = [problem_action(ann, problem) for problem in found]
        fixed = None if _most_severe(actions) == DROP_INSTANCE else _repair(
            ann, images_by_id.get(ann.get('image_id')), found)
        if fixed is None:
            actions = [DROP_INSTANCE] * len(found)
        else:
            kept.append(fixed)
        report.actions.extend(zip(found, actions))
    report.data = dict(data, annotations=kept)
    return report


def describe(problem: Problem) -> str:
    """One line: kind, message and image file."""
    where = f'  [image {problem.image}]' if problem.image is not None else ''
    return f'{problem.kind}: {problem.message}{where}'


def format_problems(problems: Sequence[Problem], max_listed: int = 10) -> str:
    """Problems one per line (at most ``max_listed``, then how many more)."""
    lines = [f'  {describe(p)}' for p in problems[:max_listed]]
    if len(problems) > max_listed:
        lines.append(f'  ... and {len(problems) - max_listed} more')
    return '\n'.join(lines)
