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

    def test_authors_threshold_is_probability_sigmoid_half(self):
        # The authors' code binarises with `logits > 0.5`; mask_thr_binary=0.6225 does the same
        # (logit(0.6225) = 0.50017), as the README says.
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(64, 28, 28, generator=g) * 2
        logits[(logits - 0.5).abs() < 1e-3] = 0.6  # off the 1.7e-4 gap between the thresholds
        target = (torch.rand(64, 28, 28, generator=g) > 0.4).float()
        ratios = torch.rand(64, generator=g) * 0.5 + 0.5
        pred = (logits > 0.5).float()
        overlap = (pred * target).sum((1, 2))
        union = (pred.sum((1, 2)) + target.sum((1, 2)) / ratios - overlap).clamp(min=1)
        ours = M.mask_iou_targets(logits, target, ratios, 0.6225)
        torch.testing.assert_close(ours, overlap / union)
        assert not torch.equal(ours, M.mask_iou_targets(logits, target, ratios, 0.5))

    def test_empty_prediction_and_target_give_zero_not_nan(self):
        pred = torch.full((2, 4, 4), -3.0)
        target = torch.zeros(2, 4, 4)
        iou = M.mask_iou_targets(pred, target, torch.tensor([0.0, 1.0]))
        assert torch.equal(iou, torch.zeros(2))

    def test_zero_area_ratio_with_prediction(self):
        pred = square_logits(4, (0, 2))[None]
        iou = M.mask_iou_targets(pred, torch.zeros(1, 4, 4), torch.zeros(1))
        assert iou.item() == 0.0

    def test_zero_area_ratio_with_resampled_target_pixels_gives_about_zero(self):
        # The box's pixel window misses the instance, but RoIAlign put target pixels in the RoI:
        # the instance lies outside the box, so the mask cannot cover it (mmdet: about 0 too).
        pred = square_logits(4, (0, 4))[None]
        target = torch.zeros(1, 4, 4)
        target[0, :2, :2] = 1
        iou = M.mask_iou_targets(pred, target, torch.zeros(1))
        assert 0.0 < iou.item() < 1e-5
        assert M.mask_iou_targets(pred, target, torch.ones(1)).item() == 4 / 16

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

    def test_polygon_parts_of_either_winding_add_up(self):
        # One instance of two parts listed in opposite orders (COCO has both): a 4x4 square
        # and a 2x2 one, 20 px in all, whatever the orientation.
        polys = PolygonMasks([[np.array([2, 2, 6, 2, 6, 6, 2, 6], float),
                               np.array([7, 7, 7, 9, 9, 9, 9, 7], float)]], 10, 10)
        boxes = torch.tensor([[0., 0., 10., 10.], [0., 0., 6., 6.], [6.5, 6.5, 10., 10.]])
        gt = torch.zeros(3, dtype=torch.long)
        ratios = M.area_ratios(polys, boxes, gt)
        assert ratios.tolist() == pytest.approx([1.0, 16 / 20, 4 / 20])
        assert torch.allclose(ratios, mmdet_area_ratios(polys, boxes, gt), atol=1e-6)

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
        # the accelerators' path (run here on the CPU) too
        device_path = M.bitmap_area_ratios(torch.from_numpy(masks.masks), boxes, torch.tensor([1]))
        assert device_path.tolist() == [0.0]
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

    def test_host_and_device_paths_agree_exactly(self):
        # The CPU path (numpy tables over the windows' regions) and the accelerator path
        # (torch tables over the whole image, run here on the CPU) give the same ratios.
        rng = np.random.default_rng(1)
        masks = random_star_polygons(rng, 4, 50, 61).to_bitmap().masks.astype(np.uint8)
        gen = torch.Generator().manual_seed(1)
        boxes = random_boxes(gen, 64, 50, 61)
        gt = torch.randint(0, 4, (64, ), generator=gen)
        host = M.area_ratios(BitmapMasks(masks, 50, 61), boxes, gt)
        device = M.bitmap_area_ratios(torch.from_numpy(masks), boxes, gt)
        assert torch.equal(host, device)
        assert host.max() > 0.5

    @pytest.mark.parametrize('per_pass', [1, 3])
    def test_tables_built_a_few_instances_at_a_time_agree(self, per_pass):
        # A table budget of 1 or 3 instances' tables: 4 or 2 passes over the 4 instances.
        rng = np.random.default_rng(2)
        masks = torch.from_numpy(
            random_star_polygons(rng, 4, 50, 61).to_bitmap().masks.astype(np.uint8))
        gen = torch.Generator().manual_seed(2)
        boxes = random_boxes(gen, 64, 50, 61)
        gt = torch.randint(0, 4, (64, ), generator=gen)
        whole = M.bitmap_area_ratios(masks, boxes, gt)
        passes = M.bitmap_area_ratios(masks, boxes, gt, max_table_entries=per_pass * 51 * 62)
        assert torch.equal(whole, passes)
        assert whole.max() > 0.5 and (whole < 0.5).any()

    def test_flipped_numpy_masks_become_a_tensor(self):
        masks = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)[:, :, ::-1]
        tensor = M.contiguous_tensor(masks)
        assert np.array_equal(tensor.numpy(), masks)

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


def brute_force_window_sums(masks, windows, gt_inds):
    """Pixels of each window's instance inside the window, by summing the pixels."""
    return np.array([masks[g, y1:y2, x1:x2].sum() for (x1, y1, x2, y2), g in
                     zip(windows.tolist(), gt_inds.tolist())], np.int64)


class TestHostWindows:

    def test_host_pixel_windows_equal_pixel_windows(self):
        gen = torch.Generator().manual_seed(2)
        boxes = torch.cat([random_boxes(gen, 100, 30, 41) * 1.5 - 10,
                           torch.tensor([[3., 3., 3.4, 3.2], [45., 1., 50., 9.],
                                         [-9., -9., -1., -2.], [0., 29.7, 41., 35.]])])
        sizes = np.repeat([[41, 30, 41, 30]], len(boxes), 0)
        host = M.host_pixel_windows(boxes.numpy().astype(np.int64), sizes)
        assert np.array_equal(host, M.pixel_windows(boxes, 30, 41).numpy())
        # Each box in an image of its own size.
        sizes[::2] = [17, 13, 17, 13]
        host = M.host_pixel_windows(boxes.numpy().astype(np.int64), sizes)
        assert np.array_equal(host[::2], M.pixel_windows(boxes[::2], 13, 17).numpy())
        assert np.array_equal(host[1::2], M.pixel_windows(boxes[1::2], 30, 41).numpy())

    def test_host_integer_boxes_truncate_towards_zero(self):
        boxes = [torch.tensor([[-1.5, 0.9, 2.99, 3.0]]), torch.tensor([[4.5, -0.5, 7.1, 8.7]])]
        expected = [[-1, 0, 2, 3], [4, 0, 7, 8]]
        assert M.host_integer_boxes(boxes).tolist() == expected
        assert M.host_integer_boxes([b.double() for b in boxes]).tolist() == expected
        assert M.host_integer_boxes([b.half() for b in boxes]).tolist() == expected

    def test_window_regions(self):
        windows = np.array([[2, 3, 5, 7], [1, 4, 3, 9], [0, 0, 1, 1], [6, 6, 6, 7]])
        regions = M.window_regions(windows, np.array([0, 0, 2, 2]), 3)
        assert regions[0].tolist() == [1, 3, 5, 9]
        assert regions[2].tolist() == [0, 0, 6, 7]
        assert regions[1, 0] > regions[1, 2]  # instance 1 has no window


class TestRegionTables:

    def random_masks(self, seed, num, height, width):
        rng = np.random.default_rng(seed)
        masks = random_star_polygons(rng, num, height, width).to_bitmap().masks
        return np.ascontiguousarray(masks.astype(np.uint8))

    def test_tables_are_prefix_sums_and_totals_are_areas(self):
        masks = self.random_masks(3, 3, 40, 53)  # W not a multiple of 8
        masks[1] = 0  # an empty instance
        ys, xs = np.nonzero(masks[0])
        cut = (int(xs.mean()), int(ys.mean()))  # a region holding part of instance 0 only
        regions = np.array([[cut[0], cut[1], 53, 40], [0, 0, 53, 40],
                            [2 ** 62, 2 ** 62, 0, 0]])
        tables = M.region_tables([masks], regions)
        for g in range(2):
            x1, y1, x2, y2 = regions[g]
            table = tables.flat[tables.offsets[g]:][:(y2 - y1 + 1) * (x2 - x1 + 1)]
            table = table.reshape(y2 - y1 + 1, x2 - x1 + 1)
            ref = np.pad(masks[g, y1:y2, x1:x2].astype(np.int64).cumsum(0).cumsum(1),
                         ((1, 0), (1, 0)))
            assert np.array_equal(table, ref)
        assert tables.totals.tolist() == [masks[0].sum(), 0, 0]  # instance 2: no region
        assert tables.origins.tolist() == [list(cut), [0, 0], [0, 0]]
        assert tables.sizes.tolist() == [[53 - cut[0], 40 - cut[1]], [53, 40], [0, 0]]
        assert masks[0].sum() > tables.flat[tables.offsets[1] - 1] > 0

    @pytest.mark.parametrize('width', [64, 61])
    def test_host_window_sums_equal_brute_force(self, width):
        masks = self.random_masks(4, 5, 48, width)
        masks[3] = 0
        gen = torch.Generator().manual_seed(4)
        boxes = torch.cat([random_boxes(gen, 80, 48, width),
                           torch.tensor([[-5., -5., 3., 2.], [width + 2., 10., width + 9., 20.],
                                         [10., 50., 20., 60.], [7., 7., 7.2, 7.9]])])
        gt = torch.randint(0, 5, (len(boxes), ), generator=gen)
        gt[gt == 4] = 0  # instance 4 gets no window
        windows = M.pixel_windows(boxes, 48, width).numpy()
        tables = M.region_tables([masks], M.window_regions(windows, gt.numpy(), 5))
        sums = M.host_window_sums(tables, windows, gt.numpy())
        assert np.array_equal(sums, brute_force_window_sums(masks, windows, gt.numpy()))
        assert sums.max() > 50 and (sums == 0).any()

    def test_several_images_of_different_sizes(self):
        images = [self.random_masks(5, 3, 40, 56), self.random_masks(6, 2, 33, 45)]
        gen = torch.Generator().manual_seed(5)
        boxes = [random_boxes(gen, 30, 40, 56), random_boxes(gen, 20, 33, 45)]
        gt = [torch.randint(0, 3, (30, ), generator=gen), torch.randint(0, 2, (20, ),
                                                                         generator=gen)]
        batch = M.batch_area_ratios([BitmapMasks(m, *m.shape[1:]) for m in images], boxes, gt)
        single = torch.cat([M.bitmap_area_ratios(torch.from_numpy(m), b, g)
                            for m, b, g in zip(images, boxes, gt)])
        assert torch.equal(batch, single)


class TestPolygonPacking:

    def reference_edges(self, instances):
        """Edges of each instance, polygon after polygon, by a plain loop."""
        out = []
        for parts in instances:
            edges = []
            for c, part in enumerate(p for p in parts if len(p)):
                pts = np.asarray(part, np.float32).reshape(-1, 2)
                for i in range(len(pts)):
                    edges.append((*pts[i], *pts[(i + 1) % len(pts)], c))
            out.append(edges)
        return out

    def test_packing_matches_a_plain_loop(self):
        image0 = PolygonMasks([[np.array([0, 0, 4, 0, 4, 3], float)],
                               [np.array([1, 1, 2, 1, 2, 2, 1, 2], float), np.array([]),
                                np.array([5, 5, 6, 5, 6, 7], float)],
                               []], 10, 10)
        image1 = PolygonMasks([[np.array([3, 3, 8, 3, 8, 8, 3, 8, 2, 5], float)]], 12, 9)
        edges, comps, num_comps = M.polygon_edge_tensors([image0, image1], 'cpu')
        ref = self.reference_edges(image0.masks + image1.masks)
        assert edges.shape == (4, 7, 4) and num_comps == 2
        for g, inst in enumerate(ref):
            assert edges[g, :len(inst)].tolist() == [list(e[:4]) for e in inst]
            assert comps[g, :len(inst)].tolist() == [e[4] for e in inst]
            assert not edges[g, len(inst):].any()  # padding: zero-length edges

    def test_no_polygons(self):
        edges, comps, num_comps = M.polygon_edge_tensors([PolygonMasks([], 5, 5)], 'cpu')
        assert edges.shape == (0, 1, 4) and comps.shape == (0, 1) and num_comps == 1


class TestClippedEdgeAreas:

    def clipped_area(self, points, window):
        """Area of a polygon inside a rectangle, with shapely."""
        from shapely.geometry import Polygon, box
        return Polygon(points).intersection(box(*window)).area

    def test_equals_shapely_on_random_polygons_and_windows(self):
        rng = np.random.default_rng(7)
        polys = random_star_polygons(rng, 20, 60, 80, max_parts=1)
        gen = torch.Generator().manual_seed(7)
        windows = M.pixel_windows(random_boxes(gen, 20, 60, 80), 60, 80).float()
        windows[0] = torch.tensor([0., 0., 80., 60.])  # the whole image
        windows[1] = torch.tensor([10., 10., 10., 40.])  # zero width
        windows[2] = torch.tensor([70., 0., 80., 5.])  # maybe outside the polygon
        edges, comps, num_comps = M.polygon_edge_tensors([polys], 'cpu')
        ours = M.polygon_areas_in_windows(edges, comps, num_comps, windows)
        ref = [self.clipped_area(np.reshape(p[0], (-1, 2)), w)
               for p, w in zip(polys.masks, windows.tolist())]
        assert np.allclose(ours.numpy(), ref, atol=1e-3)
        assert ours[1] == 0 and ours[0] > 50

    def test_axis_parallel_edges_and_both_orientations(self):
        square = torch.tensor([[0., 0., 4., 0.], [4., 0., 4., 4.], [4., 4., 0., 4.],
                               [0., 4., 0., 0.]])  # counter-clockwise in x-right, y-up
        window = torch.tensor([1., -1., 3., 2.])
        assert M.clipped_edge_areas(square, window).sum().item() == pytest.approx(4.0)
        clockwise = square.flip(0)[:, [2, 3, 0, 1]]
        assert M.clipped_edge_areas(clockwise, window).sum().item() == pytest.approx(-4.0)


class TestBatches:

    def test_batch_equals_images_one_by_one_and_mmdet(self):
        rng = np.random.default_rng(8)
        gen = torch.Generator().manual_seed(8)
        # Three images of two sizes; the second has no positive.
        polys = [random_star_polygons(rng, 3, 40, 50), random_star_polygons(rng, 2, 30, 36),
                 random_star_polygons(rng, 2, 30, 36)]
        boxes = [random_boxes(gen, 25, 40, 50), torch.zeros(0, 4), random_boxes(gen, 15, 30, 36)]
        gt = [torch.randint(0, 3, (25, ), generator=gen), torch.zeros(0, dtype=torch.long),
              torch.randint(0, 2, (15, ), generator=gen)]
        singles = {}
        for kind in ('polygon', 'bitmap'):
            masks = polys if kind == 'polygon' else [p.to_bitmap() for p in polys]
            batch = M.batch_area_ratios(masks, boxes, gt)
            singles[kind] = [M.area_ratios(*x) for x in zip(masks, boxes, gt)]
            ref = torch.cat([mmdet_area_ratios(m, b, g) for m, b, g in zip(masks, boxes, gt)
                             if len(b)])
            assert batch.shape == (40, )
            assert torch.allclose(batch, torch.cat(singles[kind]), atol=1e-6)
            assert torch.allclose(batch, ref, atol=1e-5)
            assert ref.max() > 0.5
        # A batch mixing polygons and bitmaps goes image by image.
        mixed = M.batch_area_ratios([polys[0], polys[1].to_bitmap(), polys[2].to_bitmap()],
                                    boxes, gt)
        assert torch.equal(mixed, torch.cat([singles['polygon'][0], *singles['bitmap'][1:]]))

    def test_empty_batches_and_length_mismatch(self):
        assert M.batch_area_ratios([], [], []).shape == (0, )
        masks = BitmapMasks(np.zeros((1, 4, 4), np.uint8), 4, 4)
        out = M.batch_area_ratios([masks], [torch.zeros(0, 4)], [torch.zeros(0).long()])
        assert out.shape == (0, )
        with pytest.raises(ValueError, match='2 of boxes'):
            M.batch_area_ratios([masks], [torch.zeros(0, 4)] * 2, [torch.zeros(0).long()])


def test_area_ratios_of_255_masks_too_large_for_int32_sums():
    """A 3000x3000 0/255 mask sums past 2**31: the tables widen instead of overflowing."""
    from ms_rcnn.models.mask_iou_math import batch_area_ratios, bitmap_area_ratios
    masks = np.full((1, 3000, 3000), 255, np.uint8)  # sums to 2.3e9 > 2**31 - 1
    boxes = torch.tensor([[0., 0., 3000., 3000.], [0., 0., 1500., 3000.]])
    inds = torch.tensor([0, 0])
    host = batch_area_ratios([BitmapMasks(masks, 3000, 3000)], [boxes], [inds])
    torch.testing.assert_close(host, torch.tensor([1.0, 0.5]))
    full = bitmap_area_ratios(torch.from_numpy(masks), boxes, inds)  # the accelerator path
    torch.testing.assert_close(full, torch.tensor([1.0, 0.5]))


def test_area_ratios_binarise_wider_integer_masks():
    """Values such as 256 in an int64 mask count as foreground (a uint8 cast would wrap)."""
    from ms_rcnn.models.mask_iou_math import batch_area_ratios
    masks = np.zeros((1, 20, 30), np.int64)
    masks[0, 5:15, 0:20] = 256
    boxes = torch.tensor([[0., 0., 10., 20.]])
    inds = torch.tensor([0])
    expected = torch.tensor([0.5])
    torch.testing.assert_close(
        batch_area_ratios([BitmapMasks(masks, 20, 30)], [boxes], [inds]), expected)
    torch.testing.assert_close(
        batch_area_ratios([torch.from_numpy(masks)], [boxes], [inds]), expected)
