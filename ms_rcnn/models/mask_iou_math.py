"""The maths of Mask Scoring R-CNN's MaskIoU targets, as small pure functions.

Everything here works on the device of its tensor inputs, without Python loops over proposals
and without device-to-host copies. Ground-truth masks arrive as mmdet ``BitmapMasks`` or
``PolygonMasks`` (host memory); they are copied host-to-device once per image.

Legend: P = positive RoIs, G = ground-truth instances of one image, E = polygon edges of one
instance (padded), C = polygon components of one instance (padded), S = mask size (28).
"""
import math
from typing import NamedTuple, Tuple, Union

import numpy as np
import torch
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from torch import Tensor


def logit_threshold(prob_thr: float) -> float:
    """The logit that corresponds to a probability threshold.

    Masks are binarised with ``sigmoid(logit) > prob_thr``, i.e. ``logit > logit(prob_thr)``;
    0.5 gives 0, as in the authors' code (mmdet 3.3 compares raw logits with 0.5 instead).
    """
    if not 0.0 < prob_thr < 1.0:
        raise ValueError(f'mask_thr_binary must lie in (0, 1), got {prob_thr}')
    return math.log(prob_thr / (1.0 - prob_thr))


def mask_iou_targets(mask_logits: Tensor, mask_targets: Tensor, area_ratios: Tensor,
                     mask_thr_binary: float = 0.5) -> Tensor:
    """IoU between each binarised predicted mask and its whole ground-truth instance.

    The prediction and target live at RoI scale (S x S). The intersection is counted inside the
    RoI; the ground truth's full area at RoI scale is its area inside the RoI divided by the
    fraction of the instance that lies inside the RoI (``area_ratios``). Where that fraction is
    0, the area inside the RoI is used as it is (it is 0 too, up to resampling). The union is
    clamped to at least one pixel, so an empty prediction on an empty target gives 0, not NaN.

    Args:
        mask_logits (Tensor): Predicted mask logits of each RoI's class, shape (P, S, S).
        mask_targets (Tensor): Binary mask targets, shape (P, S, S).
        area_ratios (Tensor): Fraction of each ground-truth instance inside its RoI, shape (P,).
        mask_thr_binary (float): Probability above which a pixel is foreground. Defaults to 0.5.

    Returns:
        Tensor: fp32 IoU targets in [0, 1], shape (P,).
    """
    pred = (mask_logits > logit_threshold(mask_thr_binary)).float()
    target = mask_targets.float()
    pred_areas = pred.sum((-1, -2))
    overlaps = (pred * target).sum((-1, -2))
    target_areas = target.sum((-1, -2))
    ratios = area_ratios.float()
    full_target_areas = torch.where(ratios > 0, target_areas / ratios.clamp(min=1e-6),
                                    target_areas)
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


def bitmap_area_ratios(masks: Tensor, boxes: Tensor, gt_inds: Tensor) -> Tensor:
    """Fraction of each assigned bitmap instance that lies inside its box.

    Box sums are read from summed-area tables at the four corners of each box's pixel window
    (:func:`pixel_windows`). On an accelerator the tables cover the whole image (no host sync);
    on the CPU they cover only each instance's nonzero extent, which is far cheaper to build.

    Args:
        masks (Tensor): Binary instance masks on the boxes' device, shape (G, H, W).
        boxes (Tensor): Boxes (x1, y1, x2, y2), shape (P, 4).
        gt_inds (Tensor): Index of each box's instance, shape (P,).

    Returns:
        Tensor: fp32 ratios in [0, 1]; 0 for instances of zero area, shape (P,).
    """
    if boxes.size(0) == 0:
        return boxes.new_zeros((0, ), dtype=torch.float32)
    height, width = masks.shape[-2:]
    tables = extent_tables(masks) if masks.device.type == 'cpu' else full_tables(masks)
    inside = window_sums(tables, pixel_windows(boxes, height, width), gt_inds)
    totals = tables.totals[gt_inds]
    return (inside / totals.clamp(min=1)).float()


class SummedAreaTables(NamedTuple):
    """Summed-area tables of G instances, each over a rectangle of the image, stored flat.

    ``flat[offsets[g] + y * (sizes[g, 0] + 1) + x]`` counts the pixels of instance g in
    rows [top, top + y) and columns [left, left + x) of its rectangle, where
    ``origins[g] = (left, top)`` and ``sizes[g] = (w, h)``; every pixel of g lies inside.
    ``totals[g]`` is the instance's area. All are tensors on the masks' device.
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
    table = torch.nn.functional.pad(masks.to(torch.int32), (1, 0, 1, 0))
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
        sizes=torch.tensor([[width, height]], device=device).expand(num, 2),
        totals=table[:, -1, -1])


def extent_tables(masks: Tensor) -> SummedAreaTables:
    """Tables over each instance's nonzero extent (reads the extents on the host).

    Rows are found over the whole image, columns only within the instance's rows.
    """
    rows = masks.amax(2)  # (G, H)
    pieces, offsets, origins, sizes, totals = [], [], [], [], []
    offset = 0
    for g in range(masks.size(0)):
        ys = rows[g].nonzero()
        if len(ys) == 0:
            top = left = bottom = right = 0
        else:
            top, bottom = int(ys[0]), int(ys[-1]) + 1
            xs = masks[g, top:bottom].amax(0).nonzero()
            left, right = int(xs[0]), int(xs[-1]) + 1
        table = summed_area_table(masks[g, top:bottom, left:right])
        pieces.append(table.flatten())
        offsets.append(offset)
        offset += table.numel()
        origins.append((left, top))
        sizes.append((right - left, bottom - top))
        totals.append(table[-1, -1])
    device = masks.device
    return SummedAreaTables(
        flat=torch.cat(pieces) if pieces else masks.new_zeros((0, ), dtype=torch.int32),
        offsets=torch.tensor(offsets, dtype=torch.long, device=device),
        origins=torch.tensor(origins, dtype=torch.long, device=device).reshape(-1, 2),
        sizes=torch.tensor(sizes, dtype=torch.long, device=device).reshape(-1, 2),
        totals=torch.stack(totals) if totals else masks.new_zeros((0, ), dtype=torch.int32))


def window_sums(tables: SummedAreaTables, windows: Tensor, gt_inds: Tensor) -> Tensor:
    """Pixels of each window's instance inside the window.

    Args:
        tables (SummedAreaTables): Tables of the G instances.
        windows (Tensor): Integer windows (x1, y1, x2, y2) in image pixels, shape (P, 4).
        gt_inds (Tensor): Instance of each window, shape (P,).

    Returns:
        Tensor: int32 counts, shape (P,).
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


def clipped_edge_areas(edges: Tensor, windows: Tensor) -> Tensor:
    """Signed area contribution of each polygon edge, clipped to a rectangle.

    For a closed curve, the area of its interior inside the rectangle [x1, x2] x [y1, y2] is the
    line integral of ``clamp(x, x1, x2) d clamp(y, y1, y2)`` along the curve (Green's theorem
    applied to the clamped curve: each horizontal slice keeps only its part inside [x1, x2],
    and slices outside [y1, y2] do not move). Along a straight edge both clamped coordinates
    are piecewise linear, with breaks where the edge crosses one of the four lines, so the
    trapezoid rule over the breakpoints is exact. Summing an edge loop gives its signed area.

    Args:
        edges (Tensor): Edges (xa, ya, xb, yb), shape (..., E, 4).
        windows (Tensor): Rectangles (x1, y1, x2, y2) with x1 <= x2, y1 <= y2, shape (..., 4).

    Returns:
        Tensor: Signed areas (positive for counter-clockwise loops in x-right, y-up axes),
        shape (..., E).
    """
    # Work relative to the rectangle's corner to keep fp32 products small.
    e = edges - windows[..., None, :][..., [0, 1, 0, 1]]
    size = windows[..., None, 2:4] - windows[..., None, 0:2]  # (..., 1, 2)
    start, delta = e[..., 0:2], e[..., 2:4] - e[..., 0:2]  # (..., E, 2)
    # Parameters t where x or y crosses the rectangle's lines; 0 where an edge is parallel.
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    cross = torch.cat([-start / safe, (size - start) / safe], dim=-1)  # (..., E, 4)
    cross = torch.where(torch.cat([delta, delta], -1) == 0, torch.zeros_like(cross), cross)
    ends = torch.stack([torch.zeros_like(cross[..., 0]), torch.ones_like(cross[..., 0])], -1)
    t = torch.cat([ends, cross.clamp(0.0, 1.0)], dim=-1).sort(dim=-1).values  # (..., E, 6)
    points = start[..., None, :] + t[..., None] * delta[..., None, :]  # (..., E, 6, 2)
    x = torch.minimum(points[..., 0].clamp(min=0), size[..., None, 0])
    y = torch.minimum(points[..., 1].clamp(min=0), size[..., None, 1])
    return (0.5 * (x[..., 1:] + x[..., :-1]) * (y[..., 1:] - y[..., :-1])).sum(-1)


def polygon_edge_tensors(polygons: PolygonMasks,
                         device: Union[str, torch.device]) -> Tuple[Tensor, Tensor, int]:
    """Pack the polygons of an image's instances into padded edge tensors.

    Args:
        polygons (PolygonMasks): G instances, each a list of flat (x0, y0, x1, y1, ...) arrays.
        device: Where the tensors go (one host-to-device copy).

    Returns:
        tuple: ``edges`` of shape (G, E, 4) (padding edges have zero length and contribute
        nothing), ``components`` of shape (G, E) giving each edge's polygon index within its
        instance, and C, the largest number of polygons of one instance.
    """
    per_instance = []
    for parts in polygons.masks:
        rings = [np.asarray(p, dtype=np.float32).reshape(-1, 2) for p in parts]
        rings = [r for r in rings if len(r) > 0]
        if rings:
            starts = np.concatenate(rings)
            ends = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
            comp = np.concatenate([np.full(len(r), i) for i, r in enumerate(rings)])
            per_instance.append((np.concatenate([starts, ends], 1), comp, len(rings)))
        else:
            per_instance.append((np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0))
    num_edges = max([len(c) for _, c, _ in per_instance] + [1])
    edges = np.zeros((len(per_instance), num_edges, 4), np.float32)
    comps = np.zeros((len(per_instance), num_edges), np.int64)
    for i, (e, c, _) in enumerate(per_instance):
        edges[i, :len(e)] = e
        comps[i, :len(c)] = c
    num_comps = max([n for _, _, n in per_instance] + [1])
    return (torch.from_numpy(edges).to(device), torch.from_numpy(comps).to(device), num_comps)


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


def polygon_area_ratios(polygons: PolygonMasks, boxes: Tensor, gt_inds: Tensor) -> Tensor:
    """Fraction of each assigned polygon instance that lies inside its box's pixel window.

    The window is the box truncated to integers and clipped to the image, as for bitmaps; areas
    are exact polygon areas (the shoelace area of each polygon, clipped to the window).

    Args:
        polygons (PolygonMasks): G instances of one image.
        boxes (Tensor): Boxes (x1, y1, x2, y2), shape (P, 4).
        gt_inds (Tensor): Index of each box's instance, shape (P,).

    Returns:
        Tensor: fp32 ratios in [0, 1]; 0 for instances of zero area, shape (P,).
    """
    if boxes.size(0) == 0:
        return boxes.new_zeros((0, ), dtype=torch.float32)
    edges, comps, num_comps = polygon_edge_tensors(polygons, boxes.device)
    b = boxes.detach().to(torch.int64)
    x1, x2 = b[:, 0].clamp(0, polygons.width), b[:, 2].clamp(0, polygons.width)
    y1, y2 = b[:, 1].clamp(0, polygons.height), b[:, 3].clamp(0, polygons.height)
    windows = torch.stack([x1, y1, torch.maximum(x1, x2), torch.maximum(y1, y2)], 1).float()
    pair_edges, pair_comps = edges[gt_inds], comps[gt_inds]
    inside = polygon_areas_in_windows(pair_edges, pair_comps, num_comps, windows)
    totals = polygon_areas(edges, comps, num_comps)[gt_inds]
    return torch.where(totals > 0, inside / totals.clamp(min=1e-6),
                       torch.zeros_like(inside)).clamp(0.0, 1.0)


def area_ratios(gt_masks: Union[BitmapMasks, PolygonMasks], boxes: Tensor,
                gt_inds: Tensor) -> Tensor:
    """Fraction of each assigned ground-truth instance inside its box, for either mask type.

    Args:
        gt_masks (BitmapMasks | PolygonMasks): Ground-truth instances of one image.
        boxes (Tensor): Positive boxes (x1, y1, x2, y2), shape (P, 4).
        gt_inds (Tensor): Index of each box's instance, shape (P,).

    Returns:
        Tensor: fp32 ratios on the boxes' device, shape (P,).
    """
    if isinstance(gt_masks, PolygonMasks):
        return polygon_area_ratios(gt_masks, boxes, gt_inds)
    if isinstance(gt_masks, BitmapMasks):
        gt_masks = torch.from_numpy(gt_masks.masks)
    if isinstance(gt_masks, Tensor):
        masks = gt_masks.to(boxes.device, non_blocking=True)
        if masks.dtype == torch.bool:
            masks = masks.view(torch.uint8)  # same bytes; byte reductions are much faster
        return bitmap_area_ratios(masks, boxes, gt_inds)
    raise TypeError('gt_instances.masks must be BitmapMasks, PolygonMasks or a Tensor, '
                    f'got {type(gt_masks).__name__}')
