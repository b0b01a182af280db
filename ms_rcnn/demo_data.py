"""Real instance masks that a fresh machine can obtain from PyPI alone: the 2-D nuclei example
of the ``stardist`` wheel (BSD-3; one 512 x 512 fluorescence image with 125 labelled nuclei
from the 2018 Data Science Bowl), tiled into a small COCO-style dataset.

Nothing of stardist is installed or imported: its wheel is downloaded with ``pip download``
and the two TIFF files are read out of it.
"""
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import zipfile
from typing import Dict, List, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_utils

STARDIST_VERSION = '0.9.2'
MEMBERS = ('stardist/data/images/img2d.tif', 'stardist/data/images/mask2d.tif')


def fetch_stardist_example(cache_dir: str) -> Tuple[np.ndarray, np.ndarray]:
    """Download (once) the stardist wheel and read its 2-D image and label mask.

    Args:
        cache_dir (str): Where the wheel and the extracted TIFFs are kept.

    Returns:
        tuple: image (H, W) uint8 and labels (H, W) int32 (0 = background, k = nucleus k).
    """
    import tifffile
    os.makedirs(cache_dir, exist_ok=True)
    paths = [osp.join(cache_dir, osp.basename(m)) for m in MEMBERS]
    if not all(osp.isfile(p) for p in paths):
        wheels = glob.glob(osp.join(cache_dir, f'stardist-{STARDIST_VERSION}-*.whl'))
        if not wheels:
            cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
                   '-d', cache_dir, f'stardist=={STARDIST_VERSION}']
            proc = subprocess.run(cmd, capture_output=True, text=True)
            wheels = glob.glob(osp.join(cache_dir, f'stardist-{STARDIST_VERSION}-*.whl'))
            if proc.returncode != 0 or not wheels:
                raise RuntimeError('could not download the stardist wheel with '
                                   f'`{" ".join(cmd)}`:\n{proc.stderr[-2000:]}')
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member, path in zip(MEMBERS, paths):
                with wheel.open(member) as src, open(path + '.part', 'wb') as dst:
                    dst.write(src.read())
                os.replace(path + '.part', path)
    image = tifffile.imread(paths[0])
    labels = tifffile.imread(paths[1]).astype(np.int32)
    image = cv2.normalize(image.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX)
    return image.astype(np.uint8), labels


def tile_origins(start: int, stop: int, tile: int, stride: int) -> List[int]:
    """Tile offsets covering [start, stop) with tiles of size ``tile``."""
    return list(range(start, stop - tile + 1, stride))


def tile_annotations(labels: np.ndarray, scale: int, min_area: int, image_id: int,
                     first_ann_id: int) -> List[dict]:
    """COCO annotations (RLE masks) of the labelled instances in one tile.

    Args:
        labels (np.ndarray): Label tile (h, w), already upscaled by ``scale``.
        scale (int): Upscaling factor applied to the tile (for ``min_area``).
        min_area (int): Minimum area in original pixels of an instance's part in the tile.
        image_id (int): COCO image id.
        first_ann_id (int): Id of the first annotation.

    Returns:
        list[dict]: Annotations.
    """
    anns = []
    for label in np.unique(labels[labels > 0]):
        mask = np.asfortranarray((labels == label).astype(np.uint8))
        area = int(mask.sum())
        if area < min_area * scale * scale:
            continue
        rle = mask_utils.encode(mask)
        x, y, w, h = mask_utils.toBbox(rle).tolist()
        rle['counts'] = rle['counts'].decode()
        anns.append(dict(id=first_ann_id + len(anns), image_id=image_id, category_id=1,
                         segmentation=rle, area=area, bbox=[x, y, w, h], iscrowd=0))
    return anns


def make_nuclei_coco(out_dir: str, cache_dir: str, tile: int = 128, scale: int = 2,
                     min_area: int = 30) -> Dict[str, str]:
    """Write the tiled nuclei dataset: train tiles from the left 3/4, val from the rest.

    The two splits come from disjoint parts of the image (no pixel is shared), but the 5 of
    the 125 nuclei that the split line cuts have their left part in train and their right part
    in val. Train tiles overlap by half a tile (so do val tiles, down the one val column).
    Tiles are upscaled ``scale`` times.

    Args:
        out_dir (str): Output root: ``annotations/instances_{train,val}.json`` and
            ``images/{train,val}/*.png``.
        cache_dir (str): Where the downloaded wheel is kept.
        tile (int): Tile size in original pixels. Defaults to 128.
        scale (int): Upscaling factor. Defaults to 2.
        min_area (int): Smallest kept instance part, original pixels. Defaults to 30.

    Returns:
        dict: Split to annotation file.
    """
    image, labels = fetch_stardist_example(cache_dir)
    height, width = labels.shape
    split_x = width * 3 // 4
    regions = dict(train=(0, split_x, tile // 2), val=(split_x, width, tile // 2))
    files = {}
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    for split, (x_start, x_stop, stride) in regions.items():
        os.makedirs(osp.join(out_dir, 'images', split), exist_ok=True)
        images, anns = [], []
        for y0 in tile_origins(0, height, tile, stride):
            for x0 in tile_origins(x_start, x_stop, tile, stride):
                img = image[y0:y0 + tile, x0:x0 + tile]
                lab = labels[y0:y0 + tile, x0:x0 + tile]
                size = tile * scale
                img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
                lab = cv2.resize(lab, (size, size), interpolation=cv2.INTER_NEAREST)
                image_id = len(images) + 1
                name = f'{split}_y{y0:03d}_x{x0:03d}.png'
                cv2.imwrite(osp.join(out_dir, 'images', split, name),
                            cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
                images.append(dict(id=image_id, file_name=name, height=size, width=size))
                anns += tile_annotations(lab, scale, min_area, image_id, len(anns) + 1)
        coco = dict(images=images, annotations=anns,
                    categories=[dict(id=1, name='nucleus', supercategory='nucleus')])
        path = osp.join(out_dir, 'annotations', f'instances_{split}.json')
        with open(path + '.part', 'w') as f:
            json.dump(coco, f)
        os.replace(path + '.part', path)
        files[split] = path
    return files
