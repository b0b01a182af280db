"""Checks of a COCO-style instance-segmentation annotation file, as pure functions.

Used by ``tools/check_dataset.py`` (every problem, before training) and by
:class:`ms_rcnn.datasets.CheckedCocoDataset` (the same checks while a dataset is built, with
the policy of ``docs/bad_data.md``). Each problem names the image file and/or annotation id
at fault.

Severity: ``error`` means training would crash or would silently lose or corrupt instances
(MMDetection drops some invalid instances without a word); ``warning`` means the data is
trainable but suspicious. One deliberate exception: ``bbox_too_small`` (a box under one pixel
wide or high) is a warning, so that a few specks do not fail a dataset's check, although mmdet
drops such instances (``ms_rcnn.CheckedCocoDataset`` says so when it does).

=========================  ========  ==============================================================
kind                       severity  meaning
=========================  ========  ==============================================================
invalid_structure          error     top level is not an object, or ``images``/``annotations``/
                                     ``categories`` is missing or not a list of objects, or there
                                     are no categories
invalid_category_entry     error     a category without a usable ``id`` or a ``name`` string
duplicate_category_id      error     two categories share an id
duplicate_category_name    warning   two categories share a name (a dataset whose metainfo
                                     classes name it cannot label them: training stops)
invalid_image_entry        error     an image without a usable ``id``, ``file_name``, or positive
                                     integer ``height``/``width`` (mmdet raises ``KeyError``)
duplicate_image_id         error     two images share an id (the COCO index keeps one of them)
duplicate_file_name        warning   two image entries point at the same file
image_missing              error     the image file does not exist
image_unreadable           error     the file cannot be decoded as ``LoadImageFromFile`` decodes
                                     it (``cv2.imdecode`` of its bytes: also a truncated JPEG)
image_size_mismatch        error     decoded size differs from the JSON ``height``/``width``
                                     (masks and boxes would be misplaced)
image_without_annotations  warning   an image no annotation refers to (skipped by
                                     ``filter_empty_gt``, or trained as pure background)
invalid_annotation_entry   error     an annotation without a usable ``id``, ``image_id`` or
                                     ``category_id``
duplicate_annotation_id    error     two annotations share an id (mmdet asserts unique ids)
unknown_image_id           error     ``image_id`` names no image (the annotation is dropped)
unknown_category_id        error     ``category_id`` names no category
nonfinite_coordinates      error     NaN, infinity or a number beyond float range in
                                     ``bbox``, ``area`` or a polygon
bbox_invalid               error     ``bbox`` missing or not four numbers
bbox_nonpositive_size      error     box width or height <= 0 (mmdet drops the instance)
bbox_too_small             warning   box width or height in (0, 1) (mmdet drops the instance)
bbox_out_of_bounds         error     box extends past the image by more than 1 pixel
area_invalid               error     ``area`` missing (``KeyError`` in mmdet), not a number,
                                     or <= 0 (mmdet drops the instance)
iscrowd_invalid            error     ``iscrowd`` missing (COCO evaluation raises ``KeyError``;
                                     mmdet's training reads it as 0) or not 0/1 (mmdet ignores
                                     any truthy value, e.g. the string ``"0"``, as a crowd)
segmentation_missing       error     no (or empty) ``segmentation`` while masks are expected
                                     (``LoadAnnotations(with_mask=True)`` raises ``KeyError``)
segmentation_invalid       error     ``segmentation`` is neither a polygon list nor an RLE
                                     object, has non-numeric coordinates, or its RLE counts are
                                     malformed or do not cover ``size`` exactly
rle_size_mismatch          error     RLE ``size`` differs from the image's ``[height, width]``
polygon_too_few_points     error     a polygon with fewer than 3 points (mmdet drops it)
polygon_odd_length         error     a polygon with an odd number of coordinates (mmdet drops it)
mask_zero_area             error     the whole mask is empty: polygons of shoelace area 0, or
                                     an RLE without foreground pixels
polygon_zero_area_part     warning   one part of a multi-part polygon mask has area 0 while the
                                     mask as a whole does not
=========================  ========  ==============================================================

Images are decoded with mmcv's OpenCV flags for ``LoadImageFromFile``'s ``color_type``
(default ``'color'``: EXIF orientation applied), so a size mismatch here is one that training
would see; ``'color_ignore_orientation'`` or ``'unchanged'`` read the stored pixels.
"""
from __future__ import annotations

import json
import math
import os
import os.path as osp
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from mmcv.image.io import imread_flags


ERROR = 'error'
WARNING = 'warning'

#: Severity of each problem kind (the table of the module docstring).
SEVERITY: Dict[str, str] = {
    'invalid_structure': ERROR,
    'invalid_category_entry': ERROR,
    'duplicate_category_id': ERROR,
    'duplicate_category_name': WARNING,
    'invalid_image_entry': ERROR,
    'duplicate_image_id': ERROR,
    'duplicate_file_name': WARNING,
    'image_missing': ERROR,
    'image_unreadable': ERROR,
    'image_size_mismatch': ERROR,
    'image_without_annotations': WARNING,
    'invalid_annotation_entry': ERROR,
    'duplicate_annotation_id': ERROR,
    'unknown_image_id': ERROR,
    'unknown_category_id': ERROR,
    'nonfinite_coordinates': ERROR,
    'bbox_invalid': ERROR,
    'bbox_nonpositive_size': ERROR,
    'bbox_too_small': WARNING,
    'bbox_out_of_bounds': ERROR,
    'area_invalid': ERROR,
    'iscrowd_invalid': ERROR,
    'segmentation_missing': ERROR,
    'segmentation_invalid': ERROR,
    'rle_size_mismatch': ERROR,
    'polygon_too_few_points': ERROR,
    'polygon_odd_length': ERROR,
    'mask_zero_area': ERROR,
    'polygon_zero_area_part': WARNING,
}

#: How far (pixels) a box may extend past the image border before it is reported.
BBOX_TOLERANCE = 1.0


@dataclass(frozen=True)
class Problem:
    """One problem found in a dataset.

    Attributes:
        severity (str): ``'error'`` or ``'warning'``.
        kind (str): Problem kind, a key of :data:`SEVERITY`.
        message (str): Human-readable description.
        image (str | None): ``file_name`` of the image at fault or annotated, when known.
        ann_id (Any): Id of the annotation at fault, when the problem is an annotation's.
        image_id (Any): Id of the image at fault or annotated, when known.
    """

    severity: str
    kind: str
    message: str
    image: Optional[str] = None
    ann_id: Any = None
    image_id: Any = None

    def __str__(self) -> str:
        where = []
        if self.image is not None:
            where.append(f'image {self.image}')
        if self.ann_id is not None:
            where.append(f'annotation {self.ann_id}')
        suffix = f'  [{", ".join(where)}]' if where else ''
        return f'{self.severity:<7}  {self.kind}: {self.message}{suffix}'


class DatasetInputError(Exception):
    """An input (annotation file or config) that cannot be read at all."""


def _problem(kind: str, message: str, **where: Any) -> Problem:
    """Build a :class:`Problem` with the severity of its kind."""
    return Problem(SEVERITY[kind], kind, message, **where)


# ----------------------------------------------------------------------------- value checks

def is_number(value: Any) -> bool:
    """Whether ``value`` is an int or float (booleans excluded)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_id(value: Any) -> bool:
    """Whether ``value`` can serve as a COCO id (an int or a string, not a boolean)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


#: Sizes at or beyond this do not fit the 32-bit integers of pycocotools and OpenCV.
MAX_SIZE = 2 ** 31


def _is_positive_int(value: Any) -> bool:
    """Whether ``value`` is a positive integer below :data:`MAX_SIZE` (booleans excluded)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < MAX_SIZE


def is_finite(value: float) -> bool:
    """Whether a number is finite as a float (an int too large for a float is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_finite_number(value: Any) -> bool:
    """A real number (no bool) that is finite as a float."""
    return is_number(value) and is_finite(value)


def all_finite(values: Iterable[float]) -> bool:
    """Whether every number of ``values`` is finite as a float."""
    return all(is_finite(v) for v in values)


def shoelace_area(polygon: Sequence[float]) -> float:
    """Area of a flat polygon ``(x0, y0, x1, y1, ...)`` by the shoelace formula.

    Args:
        polygon (Sequence[float]): Flat coordinates, an even number of at least 6.

    Returns:
        float: The (unsigned) area.
    """
    xs, ys = polygon[0::2], polygon[1::2]
    twice = sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(xs)))
    return abs(twice) / 2.0


def rle_string_counts(counts: str) -> List[int]:
    """Decode the run lengths of a compressed COCO RLE string (pycocotools' format).

    Used to validate an RLE before handing it to pycocotools, whose decoder does not check
    that the runs fit the mask.

    Args:
        counts (str): The compressed ``counts`` string.

    Returns:
        list[int]: The run lengths (possibly negative for a malformed string).
    """
    runs: List[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError('truncated RLE string')
            char = ord(counts[pos]) - 48
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            pos += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


# ----------------------------------------------------------------------------- structure

def check_structure(ann: Any) -> List[Problem]:
    """Check the top-level layout: an object with lists of objects for the three sections."""
    if not isinstance(ann, dict):
        return [_problem('invalid_structure',
                         f'top level is a {type(ann).__name__}, not an object')]
    problems = []
    for key in ('images', 'annotations', 'categories'):
        section = ann.get(key)
        if not isinstance(section, list):
            problems.append(_problem('invalid_structure', f'"{key}" is missing or not a list'))
        elif not all(isinstance(item, dict) for item in section):
            problems.append(_problem('invalid_structure',
                                     f'"{key}" has entries that are not objects'))
    if not problems and not ann['categories']:
        problems.append(_problem('invalid_structure', '"categories" is empty'))
    return problems


def check_categories(categories: List[dict]) -> Tuple[set, List[Problem]]:
    """Check category entries; return the set of valid category ids and the problems."""
    ids: set = set()
    problems = []
    ids_by_name: Dict[str, list] = defaultdict(list)
    for index, cat in enumerate(categories):
        cat_id = cat.get('id')
        if not is_id(cat_id):
            problems.append(_problem('invalid_category_entry',
                                     f'categories[{index}] has no usable "id" ({cat_id!r})'))
        elif cat_id in ids:
            problems.append(_problem('duplicate_category_id',
                                     f'category id {cat_id!r} appears more than once'))
        else:
            ids.add(cat_id)
            if not isinstance(cat.get('name'), str):  # pycocotools' getCatIds reads every name
                problems.append(_problem('invalid_category_entry',
                                         f'category {cat_id!r} has no "name" string'))
            else:
                ids_by_name[cat['name']].append(cat_id)
    for name, same in ids_by_name.items():
        if len(same) > 1:
            problems.append(_problem(
                'duplicate_category_name',
                f'categories {same} share the name {name!r}: a dataset whose metainfo classes '
                f'name it stops (each class needs one category); rename or merge them'))
    return ids, problems


def class_mismatch(classes: Sequence[str], categories: List[dict]) -> Optional[str]:
    """Why a dataset's ``metainfo`` classes cannot label this file's categories, or None.

    mmdet gives label ``i`` to the ``i``-th of the file's categories (in the file's order) whose
    name is a class, and names it ``classes[i]``. So every class must be the name of exactly
    one category, in the file's order; categories named by no class are left out.

    Args:
        classes (Sequence[str]): The dataset's class names.
        categories (list[dict]): The file's ``categories`` (each with ``id`` and ``name``).

    Returns:
        str | None: The problem (without the file's name), or None.
    """
    found = [cat.get('name') for cat in categories if cat.get('name') in classes]
    names = sorted({str(cat.get('name')) for cat in categories})
    missing = [name for name in classes if name not in found]
    if missing:
        return f'metainfo classes {missing} are not categories of this file (its categories: ' \
               f'{names})'
    shared = sorted({name for name in found if found.count(name) > 1})
    if shared:
        ids = sorted((cat.get('id') for cat in categories if cat.get('name') in shared),
                     key=lambda i: (isinstance(i, str), i))  # ints, then strings
        return f'several categories are named {shared} (ids {ids}); each class needs one ' \
               f'category: rename or merge them in the file'
    if found != list(classes):
        return f'metainfo classes are {list(classes)} but the file lists these categories in ' \
               f'the order {found}; mmdet gives label i to the file\'s i-th category and names ' \
               f'it classes[i], so every label would be misnamed: list the classes in the ' \
               f'file\'s order'
    return None


def left_out_warning(classes: Sequence[str], categories: List[dict],
                     annotations: List[dict]) -> Optional[str]:
    """What is dropped with the file's categories that no class names, or None.

    Args:
        classes (Sequence[str]): The dataset's class names.
        categories (list[dict]): The file's ``categories``.
        annotations (list[dict]): The file's ``annotations``.

    Returns:
        str | None: The warning (without the file's name): the categories left out and the
        number of their annotations.
    """
    left_out = {cat.get('id'): cat.get('name') for cat in categories
                if cat.get('name') not in classes and is_id(cat.get('id'))}
    if not left_out:
        return None
    count = sum(1 for ann in annotations  # a malformed id is reported by the checks
                if isinstance(ann, dict) and is_id(ann.get('category_id'))
                and ann.get('category_id') in left_out)
    return (f'categories {sorted(map(str, left_out.values()))} are not metainfo classes, so '
            f'their {count} annotation(s) are left out (the classes are {list(classes)})')


def same_file(path: str, file_name: str) -> bool:
    """Whether a dataset's image path and an annotation file's ``file_name`` name one file.

    Compared by base name: ``data_prefix`` and datasets that rewrite directories (or names with
    ``..``) change the rest, while another dataset's file of the same id almost always has
    another name.

    Args:
        path (str): An image's path in the dataset (``data_prefix`` joined to ``file_name``).
        file_name (str): The ``file_name`` of an image entry.
    """
    return osp.basename(path.replace('\\', '/')) == osp.basename(file_name.replace('\\', '/'))


# ----------------------------------------------------------------------------- images

def _image_entry_problem(index: int, img: dict) -> Optional[Problem]:
    """Problem with the fields of one image entry, or None."""
    missing = [key for key, ok in (('id', is_id(img.get('id'))),
                                   ('file_name', isinstance(img.get('file_name'), str)
                                    and bool(img.get('file_name'))),
                                   ('height', _is_positive_int(img.get('height'))),
                                   ('width', _is_positive_int(img.get('width')))) if not ok]
    if not missing:
        return None
    file_name = img.get('file_name') if isinstance(img.get('file_name'), str) else None
    img_id = img.get('id') if is_id(img.get('id')) else None
    return _problem('invalid_image_entry',
                    f'images[{index}] has missing or invalid {", ".join(missing)}',
                    image=file_name, image_id=img_id)


def index_images(images: List[dict]) -> Tuple[Dict[Any, dict], List[Problem]]:
    """Check image entries for validity and duplicates.

    Returns:
        tuple: Image id to the first entry with that id (entries without a usable id are left
        out), and the problems.
    """
    by_id: Dict[Any, dict] = {}
    seen_files: set = set()
    problems = []
    for index, img in enumerate(images):
        entry_problem = _image_entry_problem(index, img)
        if entry_problem is not None:
            problems.append(entry_problem)
        img_id, file_name = img.get('id'), img.get('file_name')
        if is_id(img_id):
            if img_id in by_id:
                problems.append(_problem(
                    'duplicate_image_id', f'image id {img_id!r} is used by '
                    f'{by_id[img_id].get("file_name")!r} and {file_name!r}',
                    image=file_name, image_id=img_id))
            else:
                by_id[img_id] = img
        if isinstance(file_name, str) and file_name:
            if file_name in seen_files:
                problems.append(_problem('duplicate_file_name',
                                         f'{file_name} is listed more than once',
                                         image=file_name, image_id=img_id))
            seen_files.add(file_name)
    return by_id, problems


def size_mismatch(actual: Tuple[int, int], expected: Tuple[int, int]) -> Optional[str]:
    """Why a decoded image's ``(height, width)`` does not fit its entry's, or None if it does."""
    if tuple(actual) == tuple(expected):
        return None
    swapped = ''
    if tuple(actual) == tuple(expected)[::-1]:
        swapped = (' (swapped: the file\'s EXIF orientation turns it by 90 degrees? If the '
                   'annotations were drawn on the stored pixels, load the images with '
                   "LoadImageFromFile(color_type='color_ignore_orientation'); if on the turned "
                   'image, swap the width and height in the annotation file)')
    return (f'image is {actual[0]}x{actual[1]} (HxW) but the annotation file says '
            f'{expected[0]}x{expected[1]}{swapped}')


def check_image_file(img: dict, img_dir: str, decode: bool = True,
                     color_type: str = 'color') -> Optional[Problem]:
    """Check that one image exists and, with ``decode``, that it decodes to the entry's size.

    It is decoded as ``LoadImageFromFile(color_type=color_type)`` decodes it (mmcv's flags).

    Returns:
        Problem | None: The problem, or None.
    """
    import cv2

    file_name = img['file_name']
    path = osp.join(img_dir, file_name)
    where = dict(image=file_name, image_id=img['id'])
    if not osp.isfile(path):
        return _problem('image_missing', f'image file not found: {path}', **where)
    if not decode:
        return None
    # From the file's bytes, as LoadImageFromFile decodes (mmcv.imfrombytes, cv2 backend):
    # cv2.imread would fill a truncated JPEG with grey where imdecode refuses it.
    try:
        content = np.fromfile(path, np.uint8)
        data = cv2.imdecode(content, imread_flags[color_type]) if content.size else None
    except (OSError, cv2.error) as exc:
        return _problem('image_unreadable', f'cannot read image file {path} ({exc})', **where)
    if data is None:
        return _problem('image_unreadable', f'cannot decode image file {path}', **where)
    mismatch = size_mismatch(data.shape[:2], (img['height'], img['width']))
    if mismatch is not None:
        return _problem('image_size_mismatch', mismatch, **where)
    return None


def check_image_files(images: List[dict], img_dir: str, decode: bool = True,
                      color_type: str = 'color') -> List[Problem]:
    """Check the files of all well-formed image entries (each file once per size it is said to
    have: two entries of one file with different sizes are both checked).

    Args:
        images (list[dict]): Image entries.
        img_dir (str): Directory that the ``file_name``\\ s are relative to.
        decode (bool): Decode each image (size and readability); without it only existence is
            checked, one ``stat`` per file.
        color_type (str): ``LoadImageFromFile``'s ``color_type``, which says how to decode
            (``'color'``, mmdet's default, turns images as their EXIF orientation says).
    """
    problems = []
    done: set = set()
    for index, img in enumerate(images):
        key = (img.get('file_name'), img.get('height'), img.get('width'))
        if _image_entry_problem(index, img) is not None or key in done:
            continue
        done.add(key)
        problem = check_image_file(img, img_dir, decode, color_type)
        if problem is not None:
            problems.append(problem)
    return problems


# ----------------------------------------------------------------------------- annotations

class _AnnContext:
    """What an annotation check needs to know: where it is and the image it belongs to."""

    def __init__(self, index: int, ann: dict, image: Optional[dict]):
        self.ann_id = ann.get('id') if is_id(ann.get('id')) else None
        self.label = f'annotation {self.ann_id!r}' if self.ann_id is not None \
            else f'annotations[{index}]'
        self.image = image
        self.where = dict(ann_id=self.ann_id,
                          image=image.get('file_name') if image else None,
                          image_id=ann.get('image_id') if is_id(ann.get('image_id')) else None)

    def problem(self, kind: str, message: str) -> Problem:
        """A problem of this annotation."""
        return _problem(kind, f'{self.label}: {message}', **self.where)

    def image_size(self) -> Optional[Tuple[int, int]]:
        """``(height, width)`` of the annotated image, when known and valid."""
        if self.image is None:
            return None
        height, width = self.image.get('height'), self.image.get('width')
        if _is_positive_int(height) and _is_positive_int(width):
            return height, width
        return None


def _check_references(ann: dict, ctx: _AnnContext, images_by_id: Dict[Any, dict],
                      cat_ids: set) -> List[Problem]:
    """Check the annotation's own id and its image and category references."""
    problems = []
    bad = [key for key in ('id', 'image_id', 'category_id') if not is_id(ann.get(key))]
    if bad:
        problems.append(ctx.problem('invalid_annotation_entry',
                                    f'missing or invalid {", ".join(bad)}'))
    if is_id(ann.get('image_id')) and ann['image_id'] not in images_by_id:
        problems.append(ctx.problem('unknown_image_id',
                                    f'image_id {ann["image_id"]!r} names no image'))
    if is_id(ann.get('category_id')) and ann['category_id'] not in cat_ids:
        problems.append(ctx.problem('unknown_category_id',
                                    f'category_id {ann["category_id"]!r} names no category'))
    return problems


def _check_bbox(bbox: Any, ctx: _AnnContext) -> List[Problem]:
    """Check an ``[x, y, w, h]`` box: shape, finiteness, size and placement in the image."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(map(is_number, bbox))):
        return [ctx.problem('bbox_invalid', f'bbox {bbox!r} is not a list of 4 numbers')]
    if not all_finite(bbox):
        return [ctx.problem('nonfinite_coordinates', f'bbox {bbox!r} has NaN or infinity')]
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        return [ctx.problem('bbox_nonpositive_size', f'bbox {bbox!r} has width or height <= 0')]
    problems = []
    if w < 1 or h < 1:
        problems.append(ctx.problem('bbox_too_small',
                                    f'bbox {bbox!r} is under 1 pixel wide or high'))
    size = ctx.image_size()
    if size is not None:
        height, width = size
        tol = BBOX_TOLERANCE
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            problems.append(ctx.problem(
                'bbox_out_of_bounds', f'bbox {bbox!r} (x2={x + w:g}, y2={y + h:g}) extends '
                f'past the {width}x{height} (WxH) image by more than {tol:g} px'))
    return problems


def _check_area(ann: dict, ctx: _AnnContext) -> List[Problem]:
    """Check the ``area`` field that mmdet reads (and filters on)."""
    area = ann.get('area')
    if not is_number(area):
        return [ctx.problem('area_invalid', f'area {area!r} is missing or not a number')]
    if not is_finite(area):
        return [ctx.problem('nonfinite_coordinates', f'area is {area!r}')]
    if area <= 0:
        return [ctx.problem('area_invalid', f'area {area!r} is not positive')]
    return []


def _check_iscrowd(ann: dict, ctx: _AnnContext) -> List[Problem]:
    """Check the ``iscrowd`` flag that COCO evaluation reads: 0 or 1 (booleans too)."""
    if 'iscrowd' not in ann:
        return [ctx.problem('iscrowd_invalid', 'no iscrowd (COCO evaluation needs it)')]
    if not (isinstance(ann['iscrowd'], (int, float)) and ann['iscrowd'] in (0, 1)):
        return [ctx.problem('iscrowd_invalid', f'iscrowd {ann["iscrowd"]!r} is not 0 or 1')]
    return []


def _polygon_part_problem(index: int, polygon: Any, ctx: _AnnContext) -> Optional[Problem]:
    """Problem with one polygon of a polygon mask, or None if it is a usable polygon."""
    if not (isinstance(polygon, list) and all(map(is_number, polygon))):
        return ctx.problem('segmentation_invalid',
                           f'polygon {index} is not a flat list of numbers')
    if not all_finite(polygon):
        return ctx.problem('nonfinite_coordinates', f'polygon {index} has NaN or infinity')
    if len(polygon) % 2:
        return ctx.problem('polygon_odd_length',
                           f'polygon {index} has an odd number ({len(polygon)}) of coordinates')
    if len(polygon) < 6:
        return ctx.problem('polygon_too_few_points',
                           f'polygon {index} has {len(polygon) // 2} points (3 needed)')
    return None


def _check_polygons(polygons: list, ctx: _AnnContext) -> List[Problem]:
    """Check a polygon mask: each part, then the area of the usable parts."""
    if polygons and all(map(is_number, polygons)):
        return [ctx.problem('segmentation_invalid',
                            f'segmentation is one flat list of {len(polygons)} numbers; COCO '
                            f'polygons are a list of lists: [[x1, y1, x2, y2, ...]]')]
    problems, areas = [], []
    for index, polygon in enumerate(polygons):
        part_problem = _polygon_part_problem(index, polygon, ctx)
        if part_problem is not None:
            problems.append(part_problem)
        else:
            areas.append((index, shoelace_area(polygon)))
    if areas and sum(area for _, area in areas) == 0:
        problems.append(ctx.problem('mask_zero_area', 'polygon mask has zero area'))
    elif len(areas) > 1:
        problems.extend(ctx.problem('polygon_zero_area_part', f'polygon {index} has zero area')
                        for index, area in areas if area == 0)
    return problems


def _rle_runs(rle: dict) -> List[int]:
    """Run lengths of an RLE object, compressed or not.

    Raises:
        ValueError: When ``counts`` is neither a string nor a list of integers.
    """
    counts = rle['counts']
    if isinstance(counts, bytes):
        counts = counts.decode('ascii')
    if isinstance(counts, str):
        return rle_string_counts(counts)
    if isinstance(counts, list) and all(isinstance(c, int) and not isinstance(c, bool)
                                        for c in counts):
        return counts
    raise ValueError('counts is neither a string nor a list of integers')


def _check_rle(rle: dict, ctx: _AnnContext) -> List[Problem]:
    """Check an RLE mask: well-formed runs covering ``size``, image size, foreground."""
    from pycocotools import mask as mask_utils

    size = rle.get('size')
    if not (isinstance(size, list) and len(size) == 2 and all(map(_is_positive_int, size))
            and 'counts' in rle):
        return [ctx.problem('segmentation_invalid', 'RLE needs "counts" and "size": [h, w]')]
    try:
        runs = _rle_runs(rle)
    except (ValueError, UnicodeDecodeError) as exc:
        return [ctx.problem('segmentation_invalid', f'RLE counts are malformed ({exc})')]
    if any(run < 0 for run in runs) or sum(runs) != size[0] * size[1]:
        return [ctx.problem('segmentation_invalid',
                            f'RLE runs total {sum(runs)} pixels, not {size[0]}x{size[1]}')]
    problems = []
    image_size = ctx.image_size()
    if image_size is not None and tuple(size) != image_size:
        problems.append(ctx.problem('rle_size_mismatch', f'RLE size {size} differs from the '
                                    f'image size {list(image_size)} (HxW)'))
    height, width = size
    if isinstance(rle['counts'], list):
        compressed = mask_utils.frPyObjects(rle, height, width)
    else:
        compressed = dict(size=size, counts=rle['counts'])
    if mask_utils.area(compressed) == 0:
        problems.append(ctx.problem('mask_zero_area', 'RLE mask has no foreground pixel'))
    return problems


def _check_segmentation(ann: dict, ctx: _AnnContext, expect_masks: bool) -> List[Problem]:
    """Check the ``segmentation`` of one annotation (polygons or RLE)."""
    seg = ann.get('segmentation')
    if seg is None or seg == [] or seg == {}:
        if expect_masks:
            return [ctx.problem('segmentation_missing', 'no segmentation')]
        return []
    if isinstance(seg, list):
        return _check_polygons(seg, ctx)
    if isinstance(seg, dict):
        return _check_rle(seg, ctx)
    return [ctx.problem('segmentation_invalid',
                        f'segmentation is a {type(seg).__name__}, not polygons or RLE')]


def check_annotation(index: int, ann: dict, images_by_id: Dict[Any, dict], cat_ids: set,
                      expect_masks: bool) -> List[Problem]:
    """All checks of one annotation that do not depend on the other annotations."""
    image = images_by_id.get(ann.get('image_id')) if is_id(ann.get('image_id')) else None
    ctx = _AnnContext(index, ann, image)
    return (_check_references(ann, ctx, images_by_id, cat_ids)
            + _check_bbox(ann.get('bbox'), ctx)
            + _check_area(ann, ctx)
            + _check_iscrowd(ann, ctx)
            + _check_segmentation(ann, ctx, expect_masks))


def check_duplicate_annotation_ids(annotations: List[dict],
                                    images_by_id: Dict[Any, dict]) -> List[Problem]:
    """One problem per repeated use of an annotation id."""
    seen: set = set()
    problems = []
    for index, ann in enumerate(annotations):
        ann_id = ann.get('id')
        if not is_id(ann_id):
            continue
        if ann_id in seen:
            ctx = _AnnContext(index, ann, images_by_id.get(ann.get('image_id'))
                              if is_id(ann.get('image_id')) else None)
            problems.append(ctx.problem('duplicate_annotation_id',
                                        f'id {ann_id!r} is used more than once'))
        seen.add(ann_id)
    return problems


def check_images_without_annotations(images_by_id: Dict[Any, dict],
                                      annotations: List[dict]) -> List[Problem]:
    """One warning per image that no annotation refers to."""
    counts: Dict[Any, int] = defaultdict(int)
    for ann in annotations:
        if is_id(ann.get('image_id')):
            counts[ann['image_id']] += 1
    return [_problem('image_without_annotations', f'{img.get("file_name")} has no annotations',
                     image=img.get('file_name'), image_id=img_id)
            for img_id, img in images_by_id.items() if not counts[img_id]]


# ----------------------------------------------------------------------------- entry points

def check_coco(ann: dict, img_dir: Optional[str], check_images: bool = True, *,
               expect_masks: bool = True, color_type: str = 'color') -> List[Problem]:
    """Check a loaded COCO instance-segmentation annotation dict (and its images).

    Args:
        ann (dict): The parsed annotation file.
        img_dir (str | None): Directory that image ``file_name``\\ s are relative to; with
            None the image files are not checked.
        check_images (bool): Whether to open the image files (existence, decoding, size).
        expect_masks (bool): Whether every annotation must have a segmentation.
        color_type (str): How images are decoded, as ``LoadImageFromFile``'s ``color_type``
            (one of mmcv's ``imread_flags``).

    Returns:
        list[Problem]: Every problem found, in a stable order (structure, categories, images,
        annotations); empty for a clean dataset.
    """
    if color_type not in imread_flags:
        raise ValueError(f'color_type must be one of {sorted(imread_flags)}, got {color_type!r}')
    problems = check_structure(ann)
    if problems:
        return problems
    cat_ids, problems = check_categories(ann['categories'])
    images_by_id, image_problems = index_images(ann['images'])
    problems += image_problems
    if check_images and img_dir is not None:
        problems += check_image_files(ann['images'], img_dir, color_type=color_type)
    problems += check_images_without_annotations(images_by_id, ann['annotations'])
    for index, annotation in enumerate(ann['annotations']):
        problems += check_annotation(index, annotation, images_by_id, cat_ids, expect_masks)
    problems += check_duplicate_annotation_ids(ann['annotations'], images_by_id)
    return problems


def load_annotation_file(path: str) -> Any:
    """Read a JSON annotation file.

    Raises:
        DatasetInputError: When the file cannot be read or is not valid JSON.
    """
    try:
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except OSError as exc:
        where = '' if osp.isabs(path) else f' (relative to the current directory {os.getcwd()})'
        raise DatasetInputError(
            f'cannot read annotation file {path}{where}: {exc.strerror or exc}') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetInputError(f'annotation file {path} is not valid JSON: {exc}')
