"""The MaskIoU target maths against hand computations and mmdet's definition."""
import math

import numpy as np
import pytest
import torch
from mmdet.structures.mask import BitmapMasks, PolygonMasks

from ms_rcnn.models import mask_iou_math as M


def square_logits(size, inside, value=5.0):
    """Logits of `value` inside rows/cols [a, b) and -value elsewhere."""
    a, b = inside
    logits = torch.full((size, size), -value)
    logits[a:b, a:b] = value
    return logits


class TestTargets:

    def test_hand_computed_iou_with_area_ratio(self):
        # Prediction: 4x4 = 16 px. Target inside the RoI: rows/cols 2..6 -> 16 px, overlap
        # rows/cols 2..4 -> 4 px. Half of the instance lies inside the RoI, so its full area
        # at RoI scale is 32 px: IoU = 4 / (16 + 32 - 4) = 1/11.
        pred = square_logits(8, (0, 4))[None]
        target = torch.zeros(1, 8, 8)
        target[0, 2:6, 2:6] = 1
        iou = M.mask_iou_targets(pred, target, torch.tensor([0.5]))
        assert iou.item() == pytest.approx(4 / 44)

    def test_whole_instance_inside(self):
        pred = square_logits(8, (0, 4))[None]
        target = torch.zeros(1, 8, 8)
        target[0, 0:4, 0:2] = 1  # 8 px, all inside the prediction
        iou = M.mask_iou_targets(pred, target, torch.tensor([1.0]))
        assert iou.item() == pytest.approx(8 / 16)

    def test_binarises_probabilities_not_logits(self):
        # Logit 0.3 is probability 0.574 > 0.5: foreground. mmdet 3.3 compares the logit with
        # 0.5 and would call it background.
        pred = torch.full((1, 4, 4), 0.3)
        target = torch.ones(1, 4, 4)
        assert M.mask_iou_targets(pred, target, torch.ones(1)).item() == pytest.approx(1.0)
        # A probability threshold of 0.6 (logit 0.405) makes them background.
        assert M.mask_iou_targets(pred, target, torch.ones(1), 0.6).item() == 0.0

    def test_empty_prediction_and_target_give_zero_not_nan(self):
        pred = torch.full((2, 4, 4), -3.0)
        target = torch.zeros(2, 4, 4)
        iou = M.mask_iou_targets(pred, target, torch.tensor([0.0, 1.0]))
        assert torch.equal(iou, torch.zeros(2))

    def test_zero_area_ratio_with_prediction(self):
        pred = square_logits(4, (0, 2))[None]
        iou = M.mask_iou_targets(pred, torch.zeros(1, 4, 4), torch.zeros(1))
        assert iou.item() == 0.0

    def test_fp16_logits_give_fp32_targets(self):
        pred = square_logits(8, (0, 4))[None].half()
        target = torch.zeros(1, 8, 8)
        target[0, :4, :4] = 1
        iou = M.mask_iou_targets(pred, target.half(), torch.ones(1, dtype=torch.half))
        assert iou.dtype == torch.float32 and iou.item() == 1.0

    def test_threshold_validation(self):
        with pytest.raises(ValueError, match='mask_thr_binary'):
            M.logit_threshold(1.0)
        assert M.logit_threshold(0.5) == 0.0
        assert M.logit_threshold(0.75) == pytest.approx(math.log(3))


class TestPixelWindows:

    def test_truncate_clip_and_minimum_size(self):
        boxes = torch.tensor([[1.7, 2.9, 5.2, 6.99],    # truncated
                              [-3.0, -0.5, 4.0, 3.0],   # clipped at 0
                              [8.0, 8.0, 20.0, 30.0],   # clipped at the far side
                              [3.0, 3.0, 3.4, 3.2],     # at least one pixel
                              [12.0, 1.0, 15.0, 2.0]])  # right of the image: empty
        windows = M.pixel_windows(boxes, height=10, width=10)
        assert windows.tolist() == [[1, 2, 5, 6], [0, 0, 4, 3], [8, 8, 10, 10], [3, 3, 4, 4],
                                    [10, 1, 10, 2]]


def random_star_polygons(rng, num, height, width, max_parts=2):
    """Valid (simple) star-shaped polygons, some instances made of two parts."""
    polys = []
    for _ in range(num):
        parts = []
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height
        for k in range(int(rng.integers(1, max_parts + 1))):
            n = int(rng.integers(5, 30))
            ang = (np.arange(n) + rng.uniform(0, 0.5, n)) * 2 * np.pi / n
            r = rng.uniform(0.4, 1.0, n) * 0.15 * min(height, width)
            ox = k * 0.35 * min(height, width)
            parts.append(np.stack([cx + ox + r * np.cos(ang), cy + r * np.sin(ang)], 1).ravel())
        polys.append(parts)
    return PolygonMasks(polys, height, width)


def random_boxes(gen, num, height, width):
    ctr = torch.rand(num, 2, generator=gen) * torch.tensor([width, height])
    wh = torch.rand(num, 2, generator=gen) * 0.6 * min(height, width) + 1
    return torch.cat([ctr - wh / 2, ctr + wh / 2], 1)


def mmdet_area_ratios(masks, boxes, gt_inds):
    """mmdet's definition: crop each instance with the box, divide areas (per-RoI loop)."""
    areas = masks.areas
    out = []
    for box, g in zip(boxes.numpy().astype(np.int32), gt_inds.tolist()):
        inside = masks[[g]].crop(box).areas[0]
        out.append(inside / areas[g] if areas[g] > 0 else 0.0)
    return torch.tensor(out, dtype=torch.float32)


class TestAreaRatios:

    def test_bitmap_hand_computed(self):
        masks = np.zeros((2, 10, 10), np.uint8)
        masks[0, 2:6, 2:6] = 1  # 16 px
        masks[1, 0:1, 0:5] = 1  # 5 px
        boxes = torch.tensor([[0., 0., 4., 4.],    # 4 px of instance 0
                              [2., 2., 10., 10.],  # all of it
                              [0., 0., 2.9, 1.],   # 2 px of instance 1 (x2 truncated to 2)
                              [7., 7., 9., 9.]])   # none
        gt = torch.tensor([0, 0, 1, 0])
        ratios = M.area_ratios(BitmapMasks(masks, 10, 10), boxes, gt)
        assert ratios.tolist() == pytest.approx([4 / 16, 1.0, 2 / 5, 0.0])

    def test_polygon_hand_computed(self):
        # A 4x4 square at (2, 2) and a triangle of area 8.
        polys = PolygonMasks([[np.array([2, 2, 6, 2, 6, 6, 2, 6], float)],
                              [np.array([0, 0, 4, 0, 0, 4], float)]], 10, 10)
        boxes = torch.tensor([[0., 0., 4., 4.], [4., 0., 10., 10.], [0., 0., 2., 2.],
                              [0., 0., 2., 10.]])
        gt = torch.tensor([0, 0, 1, 1])
        ratios = M.area_ratios(polys, boxes, gt)
        # Triangle x + y <= 4: inside [0,2]^2 it is the full square (4); inside x in [0, 2]
        # it is the trapezoid 2 * (4 + 2) / 2 = 6.
        assert ratios.tolist() == pytest.approx([4 / 16, 8 / 16, 4 / 8, 6 / 8])

    @pytest.mark.parametrize('kind', ['bitmap', 'polygon'])
    def test_matches_mmdet_definition(self, kind):
        rng = np.random.default_rng(0)
        gen = torch.Generator().manual_seed(0)
        height, width = 120, 160
        polys = random_star_polygons(rng, 6, height, width)
        masks = polys if kind == 'polygon' else polys.to_bitmap()
        boxes = random_boxes(gen, 200, height, width)
        boxes[:3] = torch.tensor([[-20., -5., 30., 40.], [150., 110., 200., 200.],
                                  [50., 50., 50.4, 50.2]])
        gt = torch.randint(0, 6, (200, ), generator=gen)
        ours = M.area_ratios(masks, boxes, gt)
        ref = mmdet_area_ratios(masks, boxes, gt)
        assert ref.min() == 0 and ref.max() > 0.9  # the cases span the range
        assert torch.allclose(ours, ref, atol=1e-5)

    def test_polygon_and_bitmap_agree_on_pixel_aligned_shapes(self):
        polys = PolygonMasks([[np.array([1, 1, 7, 1, 7, 5, 1, 5], float)]], 8, 8)
        bitmaps = polys.to_bitmap()
        boxes = torch.tensor([[0., 0., 4., 4.], [3., 2., 8., 8.]])
        gt = torch.zeros(2, dtype=torch.long)
        assert torch.allclose(M.area_ratios(polys, boxes, gt), M.area_ratios(bitmaps, boxes, gt))

    def test_zero_area_instances_and_no_positives(self):
        masks = BitmapMasks(np.zeros((2, 6, 6), np.uint8), 6, 6)
        boxes = torch.tensor([[0., 0., 6., 6.]])
        assert M.area_ratios(masks, boxes, torch.tensor([1])).tolist() == [0.0]
        degenerate = PolygonMasks([[np.array([1, 1, 1, 1, 1, 1], float)]], 6, 6)
        assert M.area_ratios(degenerate, boxes, torch.tensor([0])).tolist() == [0.0]
        empty = M.area_ratios(masks, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
        assert empty.shape == (0, ) and empty.dtype == torch.float32

    def test_no_ground_truth_instances(self):
        masks = BitmapMasks(np.zeros((0, 6, 6), np.uint8), 6, 6)
        out = M.area_ratios(masks, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
        assert out.shape == (0, )
        polys = PolygonMasks([], 6, 6)
        out = M.area_ratios(polys, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
        assert out.shape == (0, )

    def test_full_tables_equal_extent_tables(self):
        rng = np.random.default_rng(1)
        masks = torch.from_numpy(random_star_polygons(rng, 4, 50, 60).to_bitmap().masks)
        masks = masks.to(torch.uint8)
        gen = torch.Generator().manual_seed(1)
        windows = M.pixel_windows(random_boxes(gen, 64, 50, 60), 50, 60)
        gt = torch.randint(0, 4, (64, ), generator=gen)
        full = M.window_sums(M.full_tables(masks), windows, gt)
        extent = M.window_sums(M.extent_tables(masks), windows, gt)
        assert torch.equal(full, extent)
        assert full.max() > 0

    def test_bool_masks_and_tensor_masks(self):
        masks = np.zeros((1, 5, 5), bool)
        masks[0, :2, :2] = True
        boxes = torch.tensor([[0., 0., 1., 5.]])
        gt = torch.tensor([0])
        assert M.area_ratios(BitmapMasks(masks, 5, 5), boxes, gt).tolist() == [0.5]
        assert M.area_ratios(torch.from_numpy(masks), boxes, gt).tolist() == [0.5]

    def test_unknown_mask_type_is_named(self):
        with pytest.raises(TypeError, match='list'):
            M.area_ratios([[1]], torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))
