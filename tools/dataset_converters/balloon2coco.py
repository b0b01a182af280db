"""Convert the Balloon dataset's VIA polygon annotations to COCO instance JSON.

Usage::

    python tools/dataset_converters/balloon2coco.py BALLOON_ROOT OUT_DIR [--splits train val]

For each split this reads ``BALLOON_ROOT/<split>/via_region_data.json`` (VIA 1.x/2.x region
export, or a whole VIA project file with an ``_via_img_metadata`` key) and writes
``OUT_DIR/annotations/instances_<split>.json`` with one category ``{"id": 1, "name": "balloon",
"supercategory": "balloon"}``. Image ``file_name`` is relative to ``BALLOON_ROOT/<split>/``, so
an mmdet config uses ``data_root=BALLOON_ROOT``, ``data_prefix=dict(img='<split>/')`` and
``ann_file=OUT_DIR/annotations/instances_<split>.json`` (an absolute path).

Conversion rules:

- Image height and width are read from the image file (the header, via Pillow; a 90 degree EXIF
  orientation swaps them, as OpenCV's decoder does), never from the VIA ``size`` field, which
  is the file size in bytes.
- ``segmentation`` is the VIA polygon, coordinates as given (no half-pixel shift), as one flat
  list ``[x0, y0, x1, y1, ...]``; ``bbox`` is ``[x, y, w, h]`` of the polygon's extent and
  ``area`` the shoelace area of the polygon.
- Image ids and annotation ids count from 1 per split, in the order of the VIA file.
- ``OUT_DIR/images/<split>`` is made a symbolic link to ``BALLOON_ROOT/<split>``, so that
  ``OUT_DIR`` is a complete COCO-style data root for ``configs/small_data/*_balloon.py``
  (``--data-root OUT_DIR``).
- ``BALLOON_ROOT`` is only read. Every split is converted before anything is written, and each
  file is written to a temporary file in ``OUT_DIR/annotations`` and then moved into place with
  ``os.replace``, so an interrupted run never leaves a truncated file.

Bad input, per case (errors raise :class:`ConversionError` naming the file and the entry; the
command prints ``error: ...`` and exits with status 1, writing nothing):

- ``OUT_DIR`` equal to or inside ``BALLOON_ROOT`` (or ``BALLOON_ROOT`` being
  ``OUT_DIR/annotations``): error.
- ``OUT_DIR`` (or its ``annotations``/``images``) being a file, or ``OUT_DIR/images/<split>``
  being a real directory rather than an earlier run's link: error.
- Missing or unreadable VIA JSON, or JSON that is not a VIA dict of entries: error.
- An entry without ``filename``, a ``filename`` that is absolute or leaves the split
  directory, or the same ``filename`` twice: error.
- Missing image file, or a file Pillow cannot identify as an image: error.
- A region whose shape is not a polygon (rect, circle, point, ...): warning, region skipped.
- A polygon with fewer than 3 points, ``all_points_x`` and ``all_points_y`` of different
  lengths, or coordinates that are not finite numbers: error.
- A polygon with points outside the image (beyond ``[0, width] x [0, height]``): warning,
  points clipped to the image.
- A polygon of zero area (e.g. all points on a line): warning, region skipped (mmdet would drop
  it anyway).
- An entry with no regions: kept as an image without annotations.
"""
import argparse
import json
import math
import os
import os.path as osp
import sys
import tempfile
import warnings
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from PIL import Image, UnidentifiedImageError

CATEGORY = {'id': 1, 'name': 'balloon', 'supercategory': 'balloon'}
VIA_FILENAME = 'via_region_data.json'
# EXIF orientations that rotate the image by 90 degrees (width and height swap on decoding).
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
_EXIF_ORIENTATION_TAG = 0x0112


class ConversionError(ValueError):
    """Raised for input that cannot be converted (the message names file and entry)."""


class ConversionWarning(UserWarning):
    """Issued for a region that is skipped or changed during conversion."""


def load_via(via_json_path: str) -> Dict[str, dict]:
    """Load the image entries of a VIA annotation file.

    Args:
        via_json_path (str): Path of a VIA region export or project JSON file.

    Returns:
        dict: Entry key to VIA image entry, in file order.

    Raises:
        ConversionError: If the file is missing, not JSON, or not a dict of entries.
    """
    if not osp.isfile(via_json_path):
        raise ConversionError(f'VIA annotation file not found: {via_json_path}')
    try:
        with open(via_json_path, encoding='utf-8') as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConversionError(f'cannot read VIA annotation file {via_json_path}: {e}') from e
    if isinstance(data, dict) and '_via_img_metadata' in data:
        data = data['_via_img_metadata']
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConversionError(
            f'{via_json_path}: expected a JSON object mapping entry keys to image entries')
    return data


def resolve_image(image_dir: str, filename: object, where: str) -> Tuple[str, str]:
    """Check an entry's file name and find its image file.

    Args:
        image_dir (str): Directory that holds the images.
        filename (object): The entry's ``filename`` value.
        where (str): Description of the entry for error messages.

    Returns:
        tuple[str, str]: The file name relative to ``image_dir`` (with ``/`` separators) and
        the image file's path.

    Raises:
        ConversionError: If the name is missing, absolute, leaves ``image_dir``, or names no
            file.
    """
    if not isinstance(filename, str) or not filename:
        raise ConversionError(f'{where}: missing or invalid "filename": {filename!r}')
    rel = osp.normpath(filename)
    if osp.isabs(rel) or rel == '..' or rel.startswith('..' + os.sep):
        raise ConversionError(f'{where}: "filename" must be relative to {image_dir}: '
                              f'{filename!r}')
    path = osp.join(image_dir, rel)
    if not osp.isfile(path):
        raise ConversionError(f'{where}: image file not found: {path}')
    return rel.replace(os.sep, '/'), path


def read_image_size(path: str, where: str) -> Tuple[int, int]:
    """Read an image's decoded height and width from its file header.

    Args:
        path (str): Image file path.
        where (str): Description of the entry for error messages.

    Returns:
        tuple[int, int]: ``(height, width)`` after EXIF orientation, as OpenCV decodes it.

    Raises:
        ConversionError: If the file is not a readable image.
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except (OSError, UnidentifiedImageError) as e:
        raise ConversionError(f'{where}: cannot read image {path}: {e}') from e
    if orientation in _TRANSPOSED_ORIENTATIONS:
        width, height = height, width
    return height, width


def iter_regions(regions: object, where: str) -> Iterable[Tuple[str, dict]]:
    """Iterate over an entry's regions, which VIA stores as a dict or a list.

    Args:
        regions (object): The entry's ``regions`` value (``None`` for no regions).
        where (str): Description of the entry for error messages.

    Yields:
        tuple[str, dict]: The region's key (or list index) and the region.

    Raises:
        ConversionError: If ``regions`` is neither a dict nor a list of dicts.
    """
    if regions is None:
        return
    if isinstance(regions, dict):
        items = [(str(k), v) for k, v in regions.items()]
    elif isinstance(regions, list):
        items = [(str(i), v) for i, v in enumerate(regions)]
    else:
        raise ConversionError(f'{where}: "regions" must be a dict or a list, '
                              f'got {type(regions).__name__}')
    for key, region in items:
        if not isinstance(region, dict):
            raise ConversionError(f'{where}, region {key}: expected an object, '
                                  f'got {type(region).__name__}')
        yield key, region


def polygon_points(shape: dict, where: str) -> List[Tuple[float, float]]:
    """Validate a VIA polygon's coordinates.

    Args:
        shape (dict): The region's ``shape_attributes`` (``name == 'polygon'``).
        where (str): Description of the region for error messages.

    Returns:
        list[tuple[float, float]]: The polygon's points ``(x, y)``, as given.

    Raises:
        ConversionError: If the coordinate lists are missing, differ in length, hold fewer
            than 3 points or hold values that are not finite numbers.
    """
    xs, ys = shape.get('all_points_x'), shape.get('all_points_y')
    if not isinstance(xs, list) or not isinstance(ys, list):
        raise ConversionError(f'{where}: polygon needs lists "all_points_x" and "all_points_y"')
    if len(xs) != len(ys):
        raise ConversionError(f'{where}: polygon has {len(xs)} x but {len(ys)} y coordinates')
    if len(xs) < 3:
        raise ConversionError(f'{where}: polygon has {len(xs)} points, at least 3 are needed')
    for v in xs + ys:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConversionError(f'{where}: polygon coordinate is not a finite number: {v!r}')
    return [(float(x), float(y)) for x, y in zip(xs, ys)]


def clip_points(points: List[Tuple[float, float]], height: int, width: int,
                where: str) -> List[Tuple[float, float]]:
    """Clip polygon points to ``[0, width] x [0, height]``, warning if any move.

    Args:
        points (list[tuple[float, float]]): Polygon points ``(x, y)``.
        height (int): Image height.
        width (int): Image width.
        where (str): Description of the region for the warning.

    Returns:
        list[tuple[float, float]]: The clipped points.
    """
    clipped = [(min(max(x, 0.0), float(width)), min(max(y, 0.0), float(height)))
               for x, y in points]
    if clipped != points:
        warnings.warn(f'{where}: polygon extends outside the image (width {width}, height '
                      f'{height}); points clipped to the image', ConversionWarning, stacklevel=2)
    return clipped


def polygon_area(points: Sequence[Tuple[float, float]]) -> float:
    """Area of a simple polygon by the shoelace formula.

    Args:
        points (Sequence[tuple[float, float]]): Vertices ``(x, y)`` in order (a repeated
            closing vertex is allowed).

    Returns:
        float: The (unsigned) area.
    """
    twice = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]):
        twice += x0 * y1 - x1 * y0
    return abs(twice) / 2


def polygon_bbox(points: Sequence[Tuple[float, float]]) -> List[float]:
    """Bounding box ``[x, y, w, h]`` of a polygon's extent.

    Args:
        points (Sequence[tuple[float, float]]): Vertices ``(x, y)``.

    Returns:
        list[float]: ``[x_min, y_min, x_max - x_min, y_max - y_min]``.
    """
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def region_to_annotation(region: dict, height: int, width: int,
                         where: str) -> Optional[dict]:
    """Convert one VIA region to a COCO annotation without ids.

    Args:
        region (dict): The VIA region.
        height (int): Image height.
        width (int): Image width.
        where (str): Description of the region for messages.

    Returns:
        dict | None: ``segmentation``, ``area``, ``bbox``, ``iscrowd`` and ``category_id``,
        or ``None`` (with a warning) for a region that is skipped.

    Raises:
        ConversionError: If the region is a malformed polygon.
    """
    shape = region.get('shape_attributes')
    if not isinstance(shape, dict):
        raise ConversionError(f'{where}: missing "shape_attributes"')
    if shape.get('name') != 'polygon':
        warnings.warn(f'{where}: shape {shape.get("name")!r} is not a polygon; region skipped',
                      ConversionWarning, stacklevel=2)
        return None
    points = clip_points(polygon_points(shape, where), height, width, where)
    area = polygon_area(points)
    if area <= 0:
        warnings.warn(f'{where}: polygon has zero area; region skipped', ConversionWarning,
                      stacklevel=2)
        return None
    return {
        'segmentation': [[c for point in points for c in point]],
        'area': area,
        'bbox': polygon_bbox(points),
        'iscrowd': 0,
        'category_id': CATEGORY['id'],
    }


def convert_split(via_json_path: str, image_dir: str) -> dict:
    """Convert one split's VIA annotations to a COCO instance segmentation dict.

    Args:
        via_json_path (str): Path of the split's ``via_region_data.json``.
        image_dir (str): Directory holding the split's images; ``file_name`` in the result is
            relative to it.

    Returns:
        dict: COCO dict with ``images``, ``annotations`` and ``categories`` (ids from 1).

    Raises:
        ConversionError: For bad input (see the module docstring).
    """
    images, annotations, seen = [], [], {}
    for key, entry in load_via(via_json_path).items():
        where = f'{via_json_path}, entry {key!r}'
        file_name, path = resolve_image(image_dir, entry.get('filename'), where)
        if file_name in seen:
            raise ConversionError(f'{where}: image {file_name!r} is already listed by entry '
                                  f'{seen[file_name]!r}')
        seen[file_name] = key
        height, width = read_image_size(path, where)
        image_id = len(images) + 1
        images.append({'id': image_id, 'file_name': file_name, 'height': height,
                       'width': width})
        for region_key, region in iter_regions(entry.get('regions'), where):
            ann = region_to_annotation(region, height, width, f'{where}, region {region_key}')
            if ann is not None:
                annotations.append({'id': len(annotations) + 1, 'image_id': image_id, **ann})
    return {'images': images, 'annotations': annotations, 'categories': [dict(CATEGORY)]}


def is_within(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies inside it (symbolic links resolved).

    Args:
        path (str): Path to test (need not exist).
        root (str): Directory.

    Returns:
        bool: True if ``path`` is inside ``root``.
    """
    path, root = osp.realpath(path), osp.realpath(root)
    return osp.commonpath([path, root]) == root


def check_out_dir(balloon_root: str, out_dir: str) -> str:
    """Refuse an output location inside the dataset and return the annotation directory.

    Args:
        balloon_root (str): Dataset root (read only).
        out_dir (str): Output directory.

    Returns:
        str: ``out_dir/annotations``.

    Raises:
        ConversionError: If ``out_dir`` or its ``annotations`` directory is inside
            ``balloon_root``.
    """
    ann_dir = osp.join(out_dir, 'annotations')
    for path in (out_dir, ann_dir):
        if is_within(path, balloon_root):
            raise ConversionError(f'refusing to write {path} inside the dataset root '
                                  f'{balloon_root}; choose an OUT_DIR outside it')
    return ann_dir


def dump_json_atomic(obj: dict, path: str) -> None:
    """Write JSON to a temporary file beside ``path``, then move it into place.

    Args:
        obj (dict): JSON-serialisable object.
        path (str): Destination file; its directory must exist.
    """
    fd, tmp_path = tempfile.mkstemp(dir=osp.dirname(path) or '.',
                                    prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes the file private (0600)
        os.replace(tmp_path, path)
    except BaseException:
        if osp.exists(tmp_path):
            os.remove(tmp_path)
        raise


def convert(balloon_root: str, out_dir: str, splits: Sequence[str]) -> Dict[str, str]:
    """Convert the given splits and write their COCO annotation files.

    Args:
        balloon_root (str): Dataset root with ``<split>/via_region_data.json`` and images.
        out_dir (str): Output directory (outside ``balloon_root``).
        splits (Sequence[str]): Split names.

    Returns:
        dict[str, str]: Split name to the written annotation file.

    Raises:
        ConversionError: For an output directory inside the root or bad input; nothing is
            written then.
    """
    ann_dir = check_out_dir(balloon_root, out_dir)
    cocos = {}
    for split in splits:
        image_dir = osp.join(balloon_root, split)
        cocos[split] = convert_split(osp.join(image_dir, VIA_FILENAME), image_dir)
    check_outputs(out_dir, splits)
    os.makedirs(ann_dir, exist_ok=True)
    files = {}
    for split, coco in cocos.items():
        files[split] = osp.join(ann_dir, f'instances_{split}.json')
        dump_json_atomic(coco, files[split])
        print(f'{split}: {len(coco["images"])} images, {len(coco["annotations"])} instances '
              f'-> {files[split]}')
        link_split_images(osp.join(balloon_root, split), osp.join(out_dir, 'images', split))
    return files


def check_outputs(out_dir: str, splits: Sequence[str]) -> None:
    """Refuse, before anything is written, outputs that something else stands in the way of.

    Raises:
        ConversionError: ``OUT_DIR`` (or its ``annotations``/``images``) is not a directory
            (a file, a broken link), an annotation file's name is taken by something other
            than a file, or ``images/<split>`` is not a link.
    """
    for path in (out_dir, osp.join(out_dir, 'annotations'), osp.join(out_dir, 'images')):
        if osp.lexists(path) and not osp.isdir(path):
            raise ConversionError(f'{path} exists and is not a directory; choose another '
                                  'OUT_DIR')
    for split in splits:
        ann_file = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        if osp.lexists(ann_file) and not osp.isfile(ann_file):
            raise ConversionError(f'{ann_file} exists and is not a file; choose another '
                                  'OUT_DIR')
        check_link_target(osp.join(out_dir, 'images', split))


def link_split_images(image_dir: str, link: str) -> None:
    """Make ``link`` a symbolic link to ``image_dir`` (absolute), replacing an older link.

    With ``OUT_DIR/images/<split>`` linking to the images, ``OUT_DIR`` is a complete COCO-style
    data root (``annotations/`` and ``images/``) that configs and ``--data-root`` can point at,
    while the images stay where they are.
    """
    os.makedirs(osp.dirname(link), exist_ok=True)
    check_link_target(link)
    if osp.islink(link):
        os.remove(link)
    os.symlink(osp.abspath(image_dir), link)


def check_link_target(link: str) -> None:
    """Refuse to replace anything at ``link`` but a symbolic link (or nothing).

    Raises:
        ConversionError: ``link`` is a file or a directory.
    """
    if osp.lexists(link) and not osp.islink(link):
        raise ConversionError(f'{link} exists and is not a link; remove it or choose another '
                              'OUT_DIR')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse command-line arguments.

    Args:
        argv (Sequence[str], optional): Arguments; ``sys.argv[1:]`` if None.

    Returns:
        argparse.Namespace: Parsed arguments.
    """
    parser = argparse.ArgumentParser(
        description='Convert Balloon VIA polygon annotations to COCO instance JSON')
    parser.add_argument('balloon_root', help='dataset root with <split>/via_region_data.json')
    parser.add_argument('out_dir', help='output directory (outside balloon_root); files go to '
                        'OUT_DIR/annotations/instances_<split>.json')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'],
                        help='splits to convert (default: train val)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the converter.

    Args:
        argv (Sequence[str], optional): Command-line arguments; ``sys.argv[1:]`` if None.

    Returns:
        int: Exit status, 0 on success and 1 on a conversion error.
    """
    args = parse_args(argv)
    try:
        convert(args.balloon_root, args.out_dir, args.splits)
    except ConversionError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    except OSError as e:  # e.g. no permission to write OUT_DIR, a full disk
        where = f'{e.filename}: ' if e.filename else ''
        print(f'error: {where}{e.strerror or e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
