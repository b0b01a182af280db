"""The maths of Mask Scoring R-CNN's MaskIoU targets, as small pure functions.

Nothing here loops in Python over proposals. Ground-truth masks arrive as mmdet
``BitmapMasks`` or ``PolygonMasks`` (host memory). With proposals on an accelerator, polygon
edges are copied host-to-device once per batch and bitmaps once per image (from page-locked
memory, so the host never waits for the device), and everything then runs on the device
without device-to-host copies. With proposals on the CPU, bitmaps
stay in numpy (summed-area tables from OpenCV over only the part of each instance that its
boxes can see), which also avoids torch's per-call overhead on these small arrays.

Legend: P = positive RoIs, G = ground-truth instances (of one image, or of all images of a
batch, image 0's first), E = polygon edges of one instance (padded), C = polygon components
of one instance (padded), S = mask size (28).
"""
import itertools
import math
from typing import NamedTuple, Sequence, Tuple, Union

import cv2
import numpy as np
import torch
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from torch import Tensor

#: Largest table area (pixels) whose int32 sums cannot overflow, even for uint8 masks that hold
#: 255 per pixel; larger tables are built in a wider type.
MAX_INT32_PIXELS = (2**31 - 1) // 255

#: Most summed-area table entries (instances x pixels) that :func:`bitmap_area_ratios` builds at
#: once: 2**26 int32 entries are 256 MiB (int64, for images over 8.4 Mpx: 512 MiB), so an
#: image with many instances (90 at 1333 x 800 would need 367 MiB of tables at once) takes
#: several passes.
MAX_TABLE_ENTRIES = 2**26


def logit_threshold(prob_thr: float) -> float:
    """The logit that corresponds to a probability threshold.

    Masks are binarised with ``sigmoid(logit) > prob_thr``, i.e. ``logit > logit(prob_thr)``;
    0.5 gives 0. That is the paper's "threshold 0.5" and the threshold the masks are pasted with
    at test time, so the targets are the IoU of the mask that is output. The authors' code and
    mmdet 3.3 compare raw logits with 0.5 instead (probability 0.6225 = ``sigmoid(0.5)``).
    """
    if not 0.0 < prob_thr < 1.0:
        raise ValueError(f'mask_thr_binary must lie in (0, 1), got {prob_thr}')
    return math.log(prob_thr / (1.0 - prob_thr))


def mask_iou_targets(mask_logits: Tensor, mask_targets: Tensor, area_ratios: Tensor,
                     mask_thr_binary: float = 0.5) -> Tensor:
    """IoU between each binarised predicted mask and its whole ground-truth instance.

    The prediction and target live at RoI scale (S x S). The intersection is counted inside the
    RoI; the ground truth's full area at RoI scale is its area inside the RoI divided by the
    fraction of the instance that lies inside the RoI (``area_ratios``, at least 1e-6). Where
    that fraction is 0 (the box's pixel window misses the instance) but resampling still put
    target pixels inside the RoI, the full area is then huge and the target about 0, as in mmdet
    and the authors' code: the mask cannot cover an instance that lies outside its box. The
    union is clamped to at least one pixel, so an empty prediction on an empty target gives 0,
    not NaN.

    Args:
        mask_logits (Tensor): Predicted mask logits of each RoI's class, shape (P, S, S).
        mask_targets (Tensor): Binary mask targets, shape (P, S, S).
        area_ratios (Tensor): Fraction of each ground-truth instance inside its RoI, shape (P,).
        mask_thr_binary (float): Probability above which a pixel is foreground. Defaults to 0.5.

    Returns:
        Tensor: fp32 IoU targets in [0, 1], shape (P,).
    """
    logits = mask_logits.flatten(1)  # (P, S * S)
    # The comparison writes 0/1 straight into fp32: cheaper than a bool tensor then a cast.
    pred = torch.gt(logits, logit_threshold(mask_thr_binary),
                    out=logits.new_empty(logits.shape, dtype=torch.float32))
    target = mask_targets.flatten(1).float()
    pred_areas = pred.sum(1)
    overlaps = (pred * target).sum(1)
    target_areas = target.sum(1)
    ratios = area_ratios.float()
    full_target_areas = target_areas / ratios.clamp(min=1e-6)
    unions = (pred_areas + full_target_areas - overlaps).clamp(min=1.0)
    return (overlaps / unions).clamp(0.0, 1.0)


def pixel_windows(boxes: Tensor, height: int, width: int) -> Tensor:
    """Integer pixel windows of boxes, as mmdet crops a mask with a box.

    Coordinates are truncated towards zero and clipped to the image; a window is at least one
    pixel wide and high (and is empty where the box lies entirely outside the image).

    Args:
        boxes (Tensor): Boxes (x1, y1, x2, y2) in pixels, shape (P, 4).
        height (int): Image height.
        width (int): Image width.

    Returns:
        Tensor: int64 windows (x1, y1, x2, y2), half-open, inside the image, shape (P, 4).
    """
    b = boxes.detach().to(torch.int64)  # truncation towards zero, like ndarray.astype(int32)
    x1, x2 = b[:, 0].clamp(0, width), b[:, 2].clamp(0, width)
    y1, y2 = b[:, 1].clamp(0, height), b[:, 3].clamp(0, height)
    x2 = (x1 + (x2 - x1).clamp(min=1)).clamp(max=width)
    y2 = (y1 + (y2 - y1).clamp(min=1)).clamp(max=height)
    return torch.stack([x1, y1, x2, y2], dim=1)


def host_pixel_windows(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """:func:`pixel_windows` on the host, each box in an image of its own size.

    Args:
        boxes (ndarray): Boxes (x1, y1, x2, y2) already truncated to integers, shape (P, 4).
        sizes (ndarray): Width and height of each box's image as (W, H, W, H), shape (P, 4).

    Returns:
        ndarray: int64 windows (x1, y1, x2, y2), half-open, inside the image, shape (P, 4).
    """
    windows = np.clip(boxes, 0, sizes)
    # x2 = min(x1 + max(x2 - x1, 1), W), i.e. min(max(x2, x1 + 1), W); y2 alike.
    np.minimum(np.maximum(windows[:, 2:], windows[:, :2] + 1), sizes[:, 2:],
               out=windows[:, 2:])
    return windows


def bitmap_area_ratios(masks: Tensor, boxes: Tensor, gt_inds: Tensor,
                       max_table_entries: int = MAX_TABLE_ENTRIES) -> Tensor:
    """Fraction of each assigned bitmap instance that lies inside its box, on the masks' device.

    Box sums are read from summed-area tables over the whole image at the four corners of each
    box's pixel window (:func:`pixel_windows`): no host sync, the way for accelerators. The
    tables are built for as many instances at a time as fit in ``max_table_entries``. On the
    CPU, :func:`host_bitmap_area_ratios` gives the same ratios much faster.

    Args:
        masks (Tensor): Binary instance masks on the boxes' device, shape (G, H, W).
        boxes (Tensor): Boxes (x1, y1, x2, y2), shape (P, 4).
        gt_inds (Tensor): Index of each box's instance, shape (P,).
        max_table_entries (int): Most table entries built at once (at least one instance's).

    Returns:
        Tensor: fp32 ratios in [0, 1]; 0 for instances of zero area, shape (P,).
    """
    if boxes.size(0) == 0:
        return boxes.new_zeros((0, ), dtype=torch.float32)
    num, height, width = masks.shape
    windows = pixel_windows(boxes, height, width)
    per_pass = max(1, max_table_entries // ((height + 1) * (width + 1)))
    inside = torch.zeros_like(gt_inds, dtype=torch.long)
    totals = torch.zeros_like(gt_inds, dtype=torch.long)
    for start in range(0, num, per_pass):  # the range depends on shapes alone: no sync
        tables = full_tables(masks[start:start + per_pass])
        local = (gt_inds - start).clamp(0, tables.totals.numel() - 1)
        mine = (gt_inds >= start) & (gt_inds < start + per_pass)
        inside = torch.where(mine, window_sums(tables, windows, local).long(), inside)
        totals = torch.where(mine, tables.totals[local].long(), totals)
    return (inside / totals.clamp(min=1)).float()


class SummedAreaTables(NamedTuple):
    """Summed-area tables of G instances, each over a rectangle of its image, stored flat.

    ``flat[offsets[g] + y * (sizes[g, 0] + 1) + x]`` counts the pixels of instance g in
    rows [top, top + y) and columns [left, left + x) of its rectangle, where
    ``origins[g] = (left, top)`` and ``sizes[g] = (w, h)``; ``totals[g]`` is the instance's
    whole area. The fields are tensors on the masks' device with rectangles covering the image
    (:func:`full_tables`), or numpy arrays on the host with rectangles covering the windows
    to be summed (:func:`region_tables`).
    """
    flat: Tensor
    offsets: Tensor
    origins: Tensor
    sizes: Tensor
    totals: Tensor


def summed_area_table(masks: Tensor) -> Tensor:
    """Summed-area tables with a leading row and column of zeros.

    Args:
        masks (Tensor): Binary masks, shape (G, H, W) or (H, W).

    Returns:
        Tensor: int32 table where ``t[..., y, x]`` counts the pixels above row y and left of
        column x, shape (G, H + 1, W + 1) or (H + 1, W + 1).
    """
    height, width = masks.shape[-2:]
    dtype = torch.int32 if height * width <= MAX_INT32_PIXELS else torch.int64
    table = masks.new_zeros((*masks.shape[:-2], height + 1, width + 1), dtype=dtype)
    table[..., 1:, 1:] = masks  # one table-sized allocation, no padded copy
    return table.cumsum_(-2).cumsum_(-1)


def full_tables(masks: Tensor) -> SummedAreaTables:
    """Tables over the whole image for every instance (no host synchronisation)."""
    num, height, width = masks.shape
    table = summed_area_table(masks)
    step = (height + 1) * (width + 1)
    device = masks.device
    return SummedAreaTables(
        flat=table.flatten(),
        offsets=torch.arange(num, device=device) * step,
        origins=torch.zeros((num, 2), dtype=torch.long, device=device),
        sizes=torch.stack([torch.full((num, ), width, device=device),
                           torch.full((num, ), height, device=device)], 1),
        totals=table[:, -1, -1])


def window_sums(tables: SummedAreaTables, windows: Tensor, gt_inds: Tensor) -> Tensor:
    """Pixels of each window's instance inside the window.

    Args:
        tables (SummedAreaTables): Tables of the G instances (tensors).
        windows (Tensor): Integer windows (x1, y1, x2, y2) in image pixels, shape (P, 4).
        gt_inds (Tensor): Instance of each window, shape (P,).

    Returns:
        Tensor: Counts in the tables' dtype (int32, or int64 for large areas), shape (P,).
    """
    origin = tables.origins[gt_inds].repeat(1, 2)  # (P, 4) as (left, top, left, top)
    size = tables.sizes[gt_inds].repeat(1, 2)
    local = torch.minimum((windows - origin).clamp(min=0), size)
    x1, y1, x2, y2 = local.unbind(1)
    base = tables.offsets[gt_inds]
    stride = tables.sizes[gt_inds, 0] + 1

    def at(y: Tensor, x: Tensor) -> Tensor:
        return tables.flat[base + y * stride + x]

    return at(y2, x2) - at(y1, x2) - at(y2, x1) + at(y1, x1)


def window_regions(windows: np.ndarray, gt_inds: np.ndarray, num: int) -> np.ndarray:
    """The smallest rectangle holding all the windows of each instance.

    Args:
        windows (ndarray): Integer windows (x1, y1, x2, y2), shape (P, 4).
        gt_inds (ndarray): Instance of each window, shape (P,).
        num (int): G, the number of instances.

    Returns:
        ndarray: int64 rectangles (x1, y1, x2, y2), shape (G, 4); an instance without a
        window gets x1 > x2.
    """
    low = np.full((num, 2), np.iinfo(np.int64).max)
    high = np.full((num, 2), np.iinfo(np.int64).min)
    np.minimum.at(low, gt_inds, windows[:, :2])
    np.maximum.at(high, gt_inds, windows[:, 2:])
    return np.concatenate([low, high], 1)


def region_tables(masks: Sequence[np.ndarray], regions: np.ndarray) -> SummedAreaTables:
    """Summed-area tables (numpy) of each instance over its region, built on the host.

    A table is OpenCV's ``integral`` of the mask inside the region, written in place into one
    flat int32 buffer shared by all instances; the instance's area (``totals``) is summed over
    the whole mask. An instance without a region (x1 > x2) gets a 1 x 1 table and area 0.

    Args:
        masks (Sequence[ndarray]): uint8 masks of each image, C-contiguous, shapes
            (G_i, H_i, W_i); G = sum(G_i) instances, image 0's first.
        regions (ndarray): Rectangles (x1, y1, x2, y2) inside the images, shape (G, 4).

    Returns:
        SummedAreaTables: numpy arrays.
    """
    instances = [(image, g) for image in masks for g in range(len(image))]
    used = regions[:, 0] <= regions[:, 2]  # (G,) instances with a region
    rects = np.where(used[:, None], regions, 0)  # (G, 4), empty for the others
    shapes = [(y2 - y1 + 1, x2 - x1 + 1) for x1, y1, x2, y2 in rects.tolist()]
    ends = list(itertools.accumulate((h * w for h, w in shapes), initial=0))
    # int32 unless one region could overflow it (uint8 masks may hold 255 per pixel).
    exact_int32 = max((h * w for h, w in shapes), default=0) <= MAX_INT32_PIXELS
    flat = np.empty(ends[-1], np.int32 if exact_int32 else np.float64)
    totals = []
    for (image, g), (x1, y1, x2, y2), in_use, shape, start, end in zip(
            instances, rects.tolist(), used.tolist(), shapes, ends, ends[1:]):
        totals.append(cv2.sumElems(image[g])[0] if in_use else 0)
        table = flat[start:end].reshape(shape)
        if x2 > x1 and y2 > y1:
            cv2.integral(image[g, y1:y2, x1:x2], sum=table,
                         sdepth=cv2.CV_32S if exact_int32 else cv2.CV_64F)
        else:  # no pixel inside
            table.fill(0)
    return SummedAreaTables(
        flat=flat,
        offsets=np.array(ends[:-1], np.int64),
        origins=rects[:, :2],
        sizes=rects[:, 2:] - rects[:, :2],
        totals=np.array(totals, np.int64))


def host_window_sums(tables: SummedAreaTables, windows: np.ndarray,
                     gt_inds: np.ndarray) -> np.ndarray:
    """Pixels of each window's instance inside the window, on the host.

    Args:
        tables (SummedAreaTables): numpy tables whose rectangles hold every window of their
            instance (:func:`region_tables` over :func:`window_regions`).
        windows (ndarray): Integer windows (x1, y1, x2, y2) in image pixels, shape (P, 4).
        gt_inds (ndarray): Instance of each window, shape (P,).

    Returns:
        ndarray: Counts in the tables' dtype, shape (P,).
    """
    local = windows - np.tile(tables.origins[gt_inds], 2)  # (P, 4) inside the tables
    stride = tables.sizes[gt_inds, :1] + 1  # (P, 1) table row length
    # Corners (y1, x1), (y1, x2), (y2, x1), (y2, x2) of each window in the flat tables.
    corners = tables.offsets[gt_inds, None] + local[:, [1, 1, 3, 3]] * stride \
        + local[:, [0, 2, 0, 2]]
    return tables.flat[corners] @ np.array([1, -1, -1, 1], tables.flat.dtype)


def host_bitmap_area_ratios(masks: Sequence[np.ndarray], windows: np.ndarray,
                            gt_inds: np.ndarray) -> np.ndarray:
    """Fraction of each assigned bitmap instance inside its window, on the host, all images at once.

    Each instance's summed-area table covers only the rectangle around its windows
    (:func:`window_regions`), far cheaper to build than a whole-image one, and the per-window
    work is a few numpy calls for all images at once. Same counts and the same fp32 division
    as :func:`bitmap_area_ratios`, so the same ratios.

    Args:
        masks (Sequence[ndarray]): Binary uint8 masks of each image, C-contiguous, shapes
            (G_i, H_i, W_i).
        windows (ndarray): Pixel windows (:func:`host_pixel_windows`), shape (P, 4).
        gt_inds (ndarray): Index of each window's instance among all images' instances
            (image 0's first), shape (P,).

    Returns:
        ndarray: fp32 ratios in [0, 1]; 0 for instances of zero area, shape (P,).
    """
    regions = window_regions(windows, gt_inds, sum(len(m) for m in masks))
    tables = region_tables(masks, regions)
    inside = host_window_sums(tables, windows, gt_inds)
    totals = np.maximum(tables.totals[gt_inds], 1)
    return inside.astype(np.float32) / totals.astype(np.float32)


def clipped_edge_areas(edges: Tensor, windows: Tensor) -> Tensor:
    """Signed area contribution of each polygon edge, clipped to a rectangle.

    For a closed curve, the area of its interior inside the rectangle [x1, x2] x [y1, y2] is the
    line integral of ``clamp(x, x1, x2) d clamp(y, y1, y2)`` along the curve (Green's theorem
    applied to the clamped curve: each horizontal slice keeps only its part inside [x1, x2],
    and slices outside [y1, y2] do not move). On an edge (x, y) = a + t (b - a), t in [0, 1],
    ``d clamp(y)`` is ``(yb - ya) dt`` while y is inside [y1, y2], i.e. for t in an interval
    [ta, tb], and 0 elsewhere. There ``clamp(x)`` is linear between the (ordered) parameters
    where x crosses x1 and x2, clipped to [ta, tb], so the trapezoid rule over these four
    parameters is exact. No sorting is needed: a linear function crosses its lower and upper
    bounds in a known order. Summing an edge loop gives its signed area.

    Args:
        edges (Tensor): Edges (xa, ya, xb, yb), shape (..., E, 4).
        windows (Tensor): Rectangles (x1, y1, x2, y2) with x1 <= x2, y1 <= y2, shape (..., 4).

    Returns:
        Tensor: Signed areas (positive for counter-clockwise loops in x-right, y-up axes),
        shape (..., E).
    """
    # Work relative to the rectangle's corner to keep fp32 products small.
    corner = windows[..., None, 0:2]  # (..., 1, 2)
    size = windows[..., None, 2:4] - corner
    start = edges[..., 0:2] - corner  # (..., E, 2) as (x, y)
    delta = edges[..., 2:4] - edges[..., 0:2]
    # Parameters t where x (and y) meets the rectangle's lower and upper lines, in order; an
    # edge parallel to an axis gets finite stand-ins (its clamped coordinate is constant).
    safe = torch.where(delta == 0, 1.0, delta)
    at_low, at_high = -start / safe, (size - start) / safe
    enter, leave = torch.minimum(at_low, at_high), torch.maximum(at_low, at_high)
    ta, tb = enter[..., 1].clamp(0.0, 1.0), leave[..., 1].clamp(0.0, 1.0)  # y inside [ta, tb]
    t = torch.stack([ta, torch.clamp(enter[..., 0], ta, tb), torch.clamp(leave[..., 0], ta, tb),
                     tb], -1)  # (..., E, 4), non-decreasing
    x = (start[..., 0, None] + t * delta[..., 0, None]).clamp_(min=0.0)
    x = torch.minimum(x, size[..., 0, None])  # clamp(x) at the four parameters
    return delta[..., 1] * torch.trapezoid(x, t, dim=-1)


def polygon_edge_tensors(polygons: Sequence[PolygonMasks],
                         device: Union[str, torch.device]) -> Tuple[Tensor, Tensor, int]:
    """Pack the polygons of the instances of one or more images into padded edge tensors.

    Args:
        polygons (Sequence[PolygonMasks]): Instances of each image, each instance a list of
            flat (x0, y0, x1, y1, ...) arrays; G instances in all, image 0's first.
        device: Where the tensors go (one host-to-device copy each).

    Returns:
        tuple: ``edges`` of shape (G, E, 4) (padding edges have zero length and contribute
        nothing), ``components`` of shape (G, E) giving each edge's polygon index within its
        instance, and C, the largest number of polygons of one instance (at least 1).
    """
    instances = [parts for image in polygons for parts in image.masks]
    rings = [(g, part) for g, parts in enumerate(instances) for part in parts if len(part)]
    edges = np.zeros((len(instances), 1, 4), np.float32)
    comps = np.zeros((len(instances), 1), np.int64)
    if rings:
        owners = np.array([g for g, _ in rings])  # (R,) instance of each polygon, sorted
        lengths = np.array([len(part) // 2 for _, part in rings])  # (R,) its points
        points = np.concatenate([part for _, part in rings]).astype(np.float32).reshape(-1, 2)
        ring_of = np.repeat(np.arange(len(rings)), lengths)  # (N,)
        # Each point's successor within its ring: the next point, or the ring's first.
        successor = np.arange(1, len(points) + 1)
        ring_ends = np.cumsum(lengths)
        successor[ring_ends - 1] = ring_ends - lengths
        # Each edge's instance, its slot among the instance's edges, and its polygon index.
        owner = owners[ring_of]  # (N,)
        slot = np.arange(len(points)) - np.searchsorted(owner, owner)
        ring_index = np.arange(len(rings)) - np.searchsorted(owners, owners)  # (R,)
        edges = np.zeros((len(instances), slot.max() + 1, 4), np.float32)
        edges[owner, slot] = np.concatenate([points, points[successor]], 1)
        comps = np.zeros(edges.shape[:2], np.int64)
        comps[owner, slot] = ring_index[ring_of]
    num_comps = int(comps.max(initial=0)) + 1
    return (host_to_device(torch.from_numpy(edges), device),
            host_to_device(torch.from_numpy(comps), device), num_comps)


def host_to_device(tensor: Tensor, device: Union[str, torch.device]) -> Tensor:
    """Copy a host tensor to ``device`` without making the host wait for queued device work.

    For CUDA the data are first copied into page-locked memory (torch's caching host
    allocator keeps that block until the copy has run): the driver may wait for the stream
    before copying from pageable memory, even for ``non_blocking=True``. Other devices get a
    plain non-blocking copy; a tensor already there is returned as it is.
    """
    device = torch.device(device)
    if tensor.device == device:
        return tensor
    if device.type == 'cuda' and tensor.device.type == 'cpu' and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def polygon_areas_in_windows(edges: Tensor, components: Tensor, num_comps: int,
                             windows: Tensor) -> Tensor:
    """Area of polygon instances inside rectangles (each polygon's area counted positive).

    Args:
        edges (Tensor): Edges of each pair's instance, shape (P, E, 4).
        components (Tensor): Polygon index of each edge within its instance, shape (P, E).
        num_comps (int): C, an upper bound on the polygon indices plus one.
        windows (Tensor): Rectangles (x1, y1, x2, y2), shape (P, 4).

    Returns:
        Tensor: Areas, shape (P,).
    """
    signed = clipped_edge_areas(edges, windows)  # (P, E)
    per_comp = signed.new_zeros((signed.size(0), num_comps)).scatter_add_(1, components, signed)
    return per_comp.abs().sum(1)


def polygon_areas(edges: Tensor, components: Tensor, num_comps: int) -> Tensor:
    """Area of polygon instances: the shoelace area of each polygon, summed.

    Args:
        edges (Tensor): Edges (xa, ya, xb, yb), shape (G, E, 4).
        components (Tensor): Polygon index of each edge within its instance, shape (G, E).
        num_comps (int): C, an upper bound on the polygon indices plus one.

    Returns:
        Tensor: Areas, shape (G,).
    """
    xa, ya, xb, yb = edges.unbind(-1)
    signed = 0.5 * (xa + xb) * (yb - ya)
    per_comp = signed.new_zeros((signed.size(0), num_comps)).scatter_add_(1, components, signed)
    return per_comp.abs().sum(1)


def polygon_windows(boxes: Tensor, width: int, height: int) -> Tensor:
    """Boxes truncated to integers and clipped to the image, as mmdet crops polygons.

    Unlike :func:`pixel_windows` there is no one-pixel minimum (mmdet intersects polygons with
    the clipped box itself).

    Args:
        boxes (Tensor): Boxes (x1, y1, x2, y2), shape (P, 4).
        width (int): Image width.
        height (int): Image height.

    Returns:
        Tensor: fp32 windows (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2, shape (P, 4).
    """
    b = boxes.detach().to(torch.int64)  # truncation towards zero
    x1, x2 = b[:, 0].clamp(0, width), b[:, 2].clamp(0, width)
    y1, y2 = b[:, 1].clamp(0, height), b[:, 3].clamp(0, height)
    return torch.stack([x1, y1, torch.maximum(x1, x2), torch.maximum(y1, y2)], 1).float()


def polygon_area_ratios(polygons: Sequence[PolygonMasks], boxes: Sequence[Tensor],
                        gt_inds: Sequence[Tensor]) -> Tensor:
    """Fraction of each assigned polygon instance that lies inside its box's window.

    The window is the box truncated to integers and clipped to the image
    (:func:`polygon_windows`); areas are exact polygon areas (the shoelace area of each
    polygon, clipped to the window). All images are done together, with one host-to-device
    copy of their edges.

    Args:
        polygons (Sequence[PolygonMasks]): Instances of each image.
        boxes (Sequence[Tensor]): Boxes (x1, y1, x2, y2) of each image, shapes (P_i, 4).
        gt_inds (Sequence[Tensor]): Index of each box's instance in its image, shapes (P_i,).

    Returns:
        Tensor: fp32 ratios in [0, 1], image after image; 0 for instances of zero area,
        shape (P,).
    """
    device = boxes[0].device
    edges, comps, num_comps = polygon_edge_tensors(polygons, device)
    inds = instance_indices(gt_inds, [len(p) for p in polygons])
    windows = concat([polygon_windows(b, p.width, p.height) for b, p in zip(boxes, polygons)])
    inside = polygon_areas_in_windows(edges[inds], comps[inds], num_comps, windows)
    totals = polygon_areas(edges, comps, num_comps)[inds]
    return torch.where(totals > 0, inside / totals.clamp(min=1e-6),
                       torch.zeros_like(inside)).clamp(0.0, 1.0)


def concat(tensors: Sequence[Tensor]) -> Tensor:
    """``torch.cat`` along the first dim, without a copy for a single tensor."""
    return tensors[0] if len(tensors) == 1 else torch.cat(list(tensors))


def instance_indices(gt_inds: Sequence[Tensor], num_instances: Sequence[int]) -> Tensor:
    """Per-image instance indices turned into indices among all images' instances.

    Args:
        gt_inds (Sequence[Tensor]): Index of each box's instance in its image, shapes (P_i,).
        num_instances (Sequence[int]): Instances of each image.

    Returns:
        Tensor: int64 indices, image 0's instances first, shape (P,).
    """
    starts = itertools.accumulate(num_instances, initial=0)
    return concat([inds + start if start else inds for inds, start in zip(gt_inds, starts)])


def as_bitmap(gt_masks: Union[BitmapMasks, Tensor]) -> Union[np.ndarray, Tensor]:
    """Ground-truth bitmaps as uint8, without a copy for uint8 and bool masks.

    Returns:
        ndarray | Tensor: A numpy array for BitmapMasks, else a tensor, shape (G, H, W).
    """
    if isinstance(gt_masks, BitmapMasks):
        masks = gt_masks.masks
        if masks.dtype in (bool, np.uint8):
            return masks.view(np.uint8)
        return (masks != 0).view(np.uint8)  # a cast would wrap values such as 256 to 0
    if not isinstance(gt_masks, Tensor):
        raise TypeError('gt_instances.masks must be BitmapMasks, PolygonMasks or a Tensor, '
                        f'got {type(gt_masks).__name__}')
    if gt_masks.dtype == torch.bool:
        return gt_masks.view(torch.uint8)  # same bytes; byte reductions are much faster
    if gt_masks.dtype == torch.uint8:
        return gt_masks
    return gt_masks.ne(0).view(torch.uint8)  # a cast would wrap values such as 256 to 0


def contiguous_tensor(masks: Union[np.ndarray, Tensor]) -> Tensor:
    """A tensor of the masks, copied only where numpy's strides are negative or uneven."""
    if isinstance(masks, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(masks))
    return masks


def host_integer_boxes(boxes: Sequence[Tensor]) -> np.ndarray:
    """Boxes of several images truncated towards zero (as mmdet crops), on the host.

    Args:
        boxes (Sequence[Tensor]): Boxes (x1, y1, x2, y2) on the CPU, shapes (P_i, 4).

    Returns:
        ndarray: int64 boxes, shape (sum(P_i), 4).
    """
    if all(b.dtype in (torch.float32, torch.float64) for b in boxes):
        return np.concatenate([b.detach().numpy() for b in boxes]).astype(np.int64)
    return concat(boxes).detach().to(torch.int64).numpy()


def batch_area_ratios(gt_masks: Sequence[Union[BitmapMasks, PolygonMasks, Tensor]],
                      boxes: Sequence[Tensor], gt_inds: Sequence[Tensor]) -> Tensor:
    """Fraction of each assigned ground-truth instance inside its box, for several images.

    This is mmdet's ``MaskIoUHead._get_area_ratio`` (the area of the instance inside the box
    truncated to integers, over the instance's area; 0 for an instance of zero area), for a
    batch. Polygons are done on the boxes' device for all images at once
    (:func:`polygon_area_ratios`); bitmaps too on the CPU, on the host
    (:func:`host_bitmap_area_ratios`), and image by image on an accelerator
    (:func:`bitmap_area_ratios`). Mixed batches go image by image.

    Args:
        gt_masks (Sequence[BitmapMasks | PolygonMasks | Tensor]): Ground-truth instances of
            each image; bitmaps hold 0 or 1 (bool or uint8).
        boxes (Sequence[Tensor]): Positive boxes (x1, y1, x2, y2) of each image, shapes
            (P_i, 4), on one device (as their instance indices).
        gt_inds (Sequence[Tensor]): Index of each box's instance in its image, shapes (P_i,).

    Returns:
        Tensor: fp32 ratios on the boxes' device, image after image, shape (sum(P_i),).
    """
    if not len(gt_masks) == len(boxes) == len(gt_inds):
        raise ValueError(f'{len(gt_masks)} images of masks, {len(boxes)} of boxes and '
                         f'{len(gt_inds)} of instance indices')
    if all(b.shape[0] == 0 for b in boxes):
        return torch.zeros((0, ), device=boxes[0].device if len(boxes) else None)
    if all(isinstance(m, PolygonMasks) for m in gt_masks):
        return polygon_area_ratios(gt_masks, boxes, gt_inds)
    if any(isinstance(m, PolygonMasks) for m in gt_masks):  # mixed: one image at a time
        return concat([area_ratios(*image) for image in zip(gt_masks, boxes, gt_inds)])
    bitmaps = [as_bitmap(m) for m in gt_masks]
    device = boxes[0].device
    if device.type != 'cpu':
        return concat([
            bitmap_area_ratios(host_to_device(contiguous_tensor(m), device), b, i)
            for m, b, i in zip(bitmaps, boxes, gt_inds)
        ])
    host = [np.ascontiguousarray(m if isinstance(m, np.ndarray) else m.numpy(force=True))
            for m in bitmaps]
    starts = itertools.accumulate([len(m) for m in host], initial=0)
    inds = np.concatenate([i.numpy() + start for i, start in zip(gt_inds, starts)])
    sizes = np.array([[m.shape[2], m.shape[1]] * 2 for m in host])  # (images, 4) as (W, H, W, H)
    sizes = np.repeat(sizes, [b.shape[0] for b in boxes], axis=0)  # (P, 4)
    windows = host_pixel_windows(host_integer_boxes(boxes), sizes)
    return torch.from_numpy(host_bitmap_area_ratios(host, windows, inds))


def area_ratios(gt_masks: Union[BitmapMasks, PolygonMasks, Tensor], boxes: Tensor,
                gt_inds: Tensor) -> Tensor:
    """Fraction of each assigned ground-truth instance inside its box, for one image.

    Args:
        gt_masks (BitmapMasks | PolygonMasks | Tensor): Ground-truth instances of one image.
        boxes (Tensor): Positive boxes (x1, y1, x2, y2), shape (P, 4).
        gt_inds (Tensor): Index of each box's instance, shape (P,).

    Returns:
        Tensor: fp32 ratios on the boxes' device, shape (P,).
    """
    return batch_area_ratios([gt_masks], [boxes], [gt_inds])
