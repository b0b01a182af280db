"""Small synthetic datasets and model configs for tests and smoke runs (not for results), and
checks that code never makes the host wait for an accelerator."""
import json
import os
import os.path as osp
import time
from typing import Any, Callable, Optional, Sequence

import cv2
import numpy as np
import torch
from mmengine.config import Config, ConfigDict
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def toy_polygon(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A random simple star-shaped polygon inside the image, flat (x0, y0, x1, y1, ...)."""
    n = int(rng.integers(6, 14))
    radius = rng.uniform(0.08, 0.2) * min(width, height)
    cx = rng.uniform(radius + 2, width - radius - 2)
    cy = rng.uniform(radius + 2, height - radius - 2)
    angles = (np.arange(n) + rng.uniform(0, 0.5, n)) * 2 * np.pi / n
    radii = radius * rng.uniform(0.6, 1.0, n)
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).reshape(-1)


def make_toy_coco(root: str, splits: Sequence[str] = ('train', 'val'), num_images: int = 4,
                  size: tuple = (96, 128), classes: Sequence[str] = ('disc', 'star'),
                  seed: int = 0) -> dict:
    """Write a tiny COCO-style instance segmentation dataset of bright polygons.

    Layout: ``root/annotations/instances_{split}.json`` and ``root/images/{split}/*.png``.

    Args:
        root (str): Output directory.
        splits (Sequence[str]): Splits to write.
        num_images (int): Images per split.
        size (tuple): (height, width) of each image.
        classes (Sequence[str]): Category names (ids 1..n).
        seed (int): Random seed.

    Returns:
        dict: Split name to annotation file path.
    """
    rng = np.random.default_rng(seed)
    height, width = size
    files = {}
    os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
    for split in splits:
        img_dir = osp.join(root, 'images', split)
        os.makedirs(img_dir, exist_ok=True)
        images, annotations = [], []
        for img_id in range(1, num_images + 1):
            img = rng.integers(0, 40, (height, width, 3)).astype(np.uint8)
            name = f'{split}_{img_id:04d}.png'
            for _ in range(int(rng.integers(1, 4))):
                label = int(rng.integers(0, len(classes)))
                poly = toy_polygon(rng, width, height)
                pts = poly.reshape(-1, 2)
                colour = (60 + 150 * label, 200, 255 - 150 * label)
                cv2.fillPoly(img, [np.round(pts).astype(np.int32)], colour)
                x0, y0 = pts.min(0)
                x1, y1 = pts.max(0)
                area = 0.5 * abs(np.dot(pts[:, 0], np.roll(pts[:, 1], 1)) -
                                 np.dot(pts[:, 1], np.roll(pts[:, 0], 1)))
                annotations.append(
                    dict(id=len(annotations) + 1, image_id=img_id, category_id=label + 1,
                         segmentation=[poly.round(2).tolist()], area=float(area),
                         bbox=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                         iscrowd=0))
            cv2.imwrite(osp.join(img_dir, name), img)
            images.append(dict(id=img_id, file_name=name, height=height, width=width))
        coco = dict(images=images, annotations=annotations,
                    categories=[dict(id=i + 1, name=c, supercategory=c)
                                for i, c in enumerate(classes)])
        files[split] = osp.join(root, 'annotations', f'instances_{split}.json')
        with open(files[split], 'w') as f:
            json.dump(coco, f)
    return files


def small_model_cfg(num_classes: int, base: str = 'configs/ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py',
                    depth: int = 18) -> ConfigDict:
    """A from-scratch ResNet-18-FPN version of a config's model (no pretrained weights).

    Args:
        num_classes (int): Number of classes.
        base (str): Config path, relative to the repository root or absolute.
        depth (int): ResNet depth (18 or 34). Defaults to 18.

    Returns:
        ConfigDict: The model config (the config's ``model``).
    """
    cfg = Config.fromfile(osp.join(REPO_ROOT, base))
    model = cfg.model
    model.backbone.update(depth=depth, init_cfg=None)
    model.neck.in_channels = [64, 128, 256, 512]
    model.roi_head.bbox_head.num_classes = num_classes
    model.roi_head.mask_head.num_classes = num_classes
    if 'mask_iou_head' in model.roi_head:
        model.roi_head.mask_iou_head.num_classes = num_classes
    return model


class HostTransferError(RuntimeError):
    """Raised by :class:`NoBlockingHostTransfers` at a blocking host-to-device transfer."""


class NoBlockingHostTransfers(TorchFunctionMode):
    """Raise at any host-to-device transfer that makes the host wait for the device.

    Meant for the ``meta`` device, which already fails at every read of a value on the host
    (``item``, ``bool``, ``nonzero``, boolean indexing, copies to the CPU) but lets host data
    into device tensors silently. On a GPU each of the following waits for all queued work:

    - ``torch.tensor`` / ``as_tensor`` / ``asarray`` of host data on a device;
    - ``Tensor.to`` / ``cuda`` / ``copy_`` from the CPU to a device without ``non_blocking``;
    - any other operation mixing device tensors with CPU tensors that have dimensions (a CPU
      index tensor, say: it is copied to the device first). 0-dim CPU tensors are passed by
      value and allowed.
    """

    _CREATORS = {torch.tensor, torch.as_tensor, torch.asarray}
    _COPIES = {torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', str(func))
        if func not in self._CREATORS and func not in self._COPIES:
            leaves = [x for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
            devices = {x.device.type for x in leaves if x.device.type != 'cpu'}
            host = [tuple(x.shape) for x in leaves if x.device.type == 'cpu' and x.dim() > 0]
            if devices and host:
                raise HostTransferError(f'{name} mixes {sorted(devices)} tensors with host '
                                        f'tensors of shapes {host}')
        out = func(*args, **kwargs)
        if func in self._CREATORS:
            data = args[0] if args else kwargs.get('data')
            on_device = isinstance(out, torch.Tensor) and out.device.type != 'cpu'
            if on_device and not (isinstance(data, torch.Tensor) and data.device == out.device):
                raise HostTransferError(f'torch.{name} of host data on {out.device}')
        elif func in self._COPIES:
            source = args[1] if func is torch.Tensor.copy_ else args[0]
            target = args[0] if func is torch.Tensor.copy_ else out
            non_blocking = kwargs.get('non_blocking', False) or any(
                isinstance(a, bool) and a for a in args[1:])
            if (isinstance(source, torch.Tensor) and source.device.type == 'cpu'
                    and target.device.type != 'cpu' and not non_blocking):
                raise HostTransferError(f'blocking Tensor.{name} from the host to '
                                        f'{target.device}')
        return out


def host_waits_for_device(fn: Callable[[], Any], device: torch.device,
                          min_sleep_s: float = 0.2, attempts: int = 4) -> bool:
    """Whether ``fn()`` makes the host wait for device work queued before it (CUDA only).

    Catches every kind of synchronisation, also those torch's sync debug mode does not see
    (a copy from pageable memory, an event wait, a sync inside an extension). The device is
    kept busy with ``torch.cuda._sleep``, an event is recorded behind the sleep, and ``fn``
    runs: if the event is still pending when ``fn`` returns, ``fn`` did not wait. A short
    calibration picks the sleep's length in cycles, but the verdict uses the length measured
    with CUDA events (GPU clocks ramp from a few hundred MHz at idle to about 2 GHz under
    load), and a sleep that turned out too short to decide (:func:`sync_verdict`) is retried
    twice as long. ``fn`` runs once alone, then once per try.
    """
    if device.type != 'cuda':
        raise ValueError(f'host_waits_for_device needs a CUDA device, got {device}')
    with torch.cuda.device(device):
        torch.cuda._sleep(100_000_000)  # ramp the clocks up before measuring anything
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        alone_s = time.perf_counter() - start
        cycles = 10_000_000
        before, after = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        before.record()
        torch.cuda._sleep(cycles)
        after.record()
        after.synchronize()
        cycles_per_s = cycles / max(before.elapsed_time(after) / 1000, 1e-6)
        sleep_s = max(min_sleep_s, 5 * alone_s)
        for _ in range(attempts):
            before.record()
            torch.cuda._sleep(int(sleep_s * cycles_per_s))
            after.record()
            fn()
            pending = not after.query()
            after.synchronize()
            verdict = sync_verdict(pending, before.elapsed_time(after) / 1000, alone_s)
            if verdict is not None:
                return verdict
            sleep_s *= 2
    raise RuntimeError(f'could not tell whether the call waits for the device: it took '
                       f'{alone_s:.3f} s alone and a sleep of up to {sleep_s / 2:.3f} s did not '
                       f'outlast it')


def sync_verdict(pending: bool, slept_s: float, alone_s: float) -> Optional[bool]:
    """Decide from one try of :func:`host_waits_for_device` whether the call waited.

    Args:
        pending (bool): Whether the device's sleep was still running when the call returned.
        slept_s (float): How long the sleep ran on the device (seconds).
        alone_s (float): How long the call takes on its own, device work included (seconds).

    Returns:
        bool or None: False when the sleep was still running (the call cannot have waited for
        it); True when it had ended although it was at least 3x as long as the call alone (only
        a wait explains that); None when the sleep was too short to tell.
    """
    if pending:
        return False
    if slept_s >= 3 * alone_s:
        return True
    return None
