"""The MaskIoU head: forward, targets, loss and prediction fields."""
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead
from mmdet.structures.mask import BitmapMasks
from mmengine.config import ConfigDict
from mmengine.structures import InstanceData

from ms_rcnn.models import MaskIoUHead
from ms_rcnn.models.mask_iou_head import cat_channels_last


def small_head(**kwargs):
    cfg = dict(num_classes=3, in_channels=8, conv_out_channels=8, fc_out_channels=16)
    cfg.update(kwargs)
    return MaskIoUHead(**cfg)


def heads_with_equal_weights():
    """Ours and mmdet's head with the same seeded weights, and inputs for 6 RoIs."""
    torch.manual_seed(0)
    theirs = MMDetMaskIoUHead(num_classes=4, in_channels=8, conv_out_channels=8,
                              fc_out_channels=16)
    theirs.init_weights()
    ours = small_head(num_classes=4)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    feats, masks = torch.randn(6, 8, 14, 14), torch.randn(6, 28, 28)
    return ours, theirs, feats, masks


def test_forward_shape_and_layer_names_match_mmdet():
    ours = small_head()
    theirs = MMDetMaskIoUHead(num_classes=3, in_channels=8, conv_out_channels=8,
                              fc_out_channels=16)
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    out = ours(torch.randn(5, 8, 14, 14), torch.randn(5, 28, 28))
    assert out.shape == (5, 3)


@pytest.mark.parametrize('side', [7, 9, 14])
def test_odd_roi_feature_sizes_fit_the_first_fc_layer(side):
    """The stride-2 conv maps 7 to 4 (not 7 // 2 = 3, mmdet's size of the first FC layer)."""
    head = small_head(roi_feat_size=side)
    out = head(torch.randn(2, 8, side, side), torch.randn(2, 2 * side, 2 * side))
    assert out.shape == (2, 3)
    assert head.fcs[0].in_features == 8 * ((side + 1) // 2) ** 2


def test_equal_weights_give_equal_outputs_to_mmdet():
    ours, theirs, feats, masks = heads_with_equal_weights()
    assert torch.allclose(ours(feats, masks), theirs(feats, masks), atol=1e-6)


def test_equal_weights_give_equal_gradients_to_mmdet():
    # Our ReLUs work in place; the gradients must still be mmdet's.
    ours, theirs, feats, masks = heads_with_equal_weights()
    grads = []
    for head in (ours, theirs):
        x, m = feats.clone().requires_grad_(), masks.clone().requires_grad_()
        head.zero_grad()
        (head(x, m) ** 2).sum().backward()
        grads.append([x.grad, m.grad] + [p.grad for p in head.parameters()])
    assert len(grads[0]) == len(grads[1]) == 2 + 14
    for ours_grad, their_grad in zip(*grads):
        assert ours_grad.abs().sum() > 0
        torch.testing.assert_close(ours_grad, their_grad, rtol=1e-5, atol=1e-6)


def test_traced_and_exported_head_give_the_eager_result():
    # Deployment: the graph must hold plain ops (no oneDNN shortcut, no buffer of a fixed
    # device or dtype) and take any number of RoIs.
    torch.manual_seed(0)
    head = small_head().eval()
    head.init_weights()
    feats, masks = torch.randn(5, 8, 14, 14), torch.randn(5, 28, 28)
    with torch.no_grad():
        with warnings.catch_warnings():  # torch >= 2.14 deprecates tracing; mmdeploy uses it
            warnings.simplefilter('ignore', FutureWarning)
            traced = torch.jit.trace(head, (feats, masks))
        rois = torch.export.Dim('rois', min=1, max=1000)
        exported = torch.export.export(
            head, (feats, masks),
            dynamic_shapes=dict(mask_feat={0: rois}, mask_preds={0: rois})).module()
        for n in (5, 7, 1):
            other_feats, other_masks = torch.randn(n, 8, 14, 14), torch.randn(n, 28, 28)
            eager = head(other_feats, other_masks)
            for run in (traced, exported):
                torch.testing.assert_close(run(other_feats, other_masks), eager,
                                           rtol=1e-5, atol=1e-6)
        assert traced(feats[:0], masks[:0]).shape == (0, 3)
        # A graph traced in fp32 runs in bfloat16 once the weights are converted.
        traced.to(torch.bfloat16)
        head.to(torch.bfloat16)
        torch.testing.assert_close(traced(feats.bfloat16(), masks.bfloat16()),
                                   head(feats.bfloat16(), masks.bfloat16()))


def test_forward_hooks_see_the_layer_output_before_the_relu():
    # Feature extraction and Grad-CAM hook the convs: the ReLU must not overwrite what a
    # hook holds, and backward through a hooked output must work, as with mmdet's head.
    ours, theirs, feats, masks = heads_with_equal_weights()
    held = []
    for head in (ours, theirs):
        outputs = {}
        handles = [head.convs[1].register_forward_hook(
                       lambda module, args, out: outputs.__setitem__('conv', out)),
                   head.fcs[0].register_forward_hook(
                       lambda module, args, out: outputs.__setitem__('fc', out))]
        with torch.no_grad():
            head(feats, masks)
            held.append({k: v.clone() for k, v in outputs.items()})
        head.zero_grad()
        # The square saves the hooked output for backward: an in-place ReLU would break it.
        (head(feats, masks).sum() + (outputs['conv'] ** 2).sum()).backward()
        held[-1]['grad'] = head.convs[0].weight.grad.clone()
        for handle in handles:
            handle.remove()
    assert (held[0]['conv'] < 0).any() and (held[0]['fc'] < 0).any()
    for key in ('conv', 'fc'):
        torch.testing.assert_close(held[0][key], held[1][key], rtol=1e-5, atol=1e-6)
    # Channels-last and NCHW convs sum in other orders; the squared loss makes sums large.
    torch.testing.assert_close(held[0]['grad'], held[1]['grad'], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('where', ['relu', 'relu_pre', 'global', 'global_pre'])
def test_relu_hooks_are_called_as_with_mmdets_head(where):
    # Hooks on the ReLU module (or on every module) see each activation, as mmdet's head shows.
    ours, theirs, feats, masks = heads_with_equal_weights()
    seen = []
    for head in (ours, theirs):
        outputs = []
        if where == 'relu':
            handle = head.relu.register_forward_hook(
                lambda module, args, out: outputs.append(out))
        elif where == 'relu_pre':
            handle = head.relu.register_forward_pre_hook(
                lambda module, args: outputs.append(args[0]))
        elif where == 'global':
            handle = torch.nn.modules.module.register_module_forward_hook(
                lambda module, args, out: outputs.append(out)
                if isinstance(module, torch.nn.ReLU) else None)
        else:
            handle = torch.nn.modules.module.register_module_forward_pre_hook(
                lambda module, args: outputs.append(args[0])
                if isinstance(module, torch.nn.ReLU) else None)
        try:
            with torch.no_grad():
                head(feats, masks)
        finally:
            handle.remove()
        seen.append(outputs)
    assert len(seen[0]) == len(seen[1]) == 6  # four convs and two FCs
    for ours_out, theirs_out in zip(*seen):
        torch.testing.assert_close(ours_out.contiguous(), theirs_out.contiguous(),
                                   rtol=1e-5, atol=1e-6)
    if where in ('relu_pre', 'global_pre'):
        assert any((out < 0).any() for out in seen[0])


@pytest.mark.parametrize('where', ['layer', 'layer_pre', 'relu', 'global'])
def test_backward_hooks_work_as_with_mmdets_head(where):
    # Full backward hooks wrap a module's output in a view that must not change in place, and
    # guided backpropagation hooks the ReLUs' backward: both as with mmdet's head.
    ours, theirs, feats, masks = heads_with_equal_weights()
    calls, grads = [], []
    for head in (ours, theirs):
        count = []
        def name(module):  # our FC layers are nn.Linear subclasses
            return type(module).__name__.replace('OneDNNLinear', 'Linear')

        hook = lambda module, grad_in, grad_out: count.append(name(module))  # noqa: E731
        if where == 'layer':
            handle = head.convs[0].register_full_backward_hook(hook)
        elif where == 'layer_pre':
            handle = head.fcs[0].register_full_backward_pre_hook(
                lambda module, grad_out: count.append(name(module)))
        elif where == 'relu':
            handle = head.relu.register_full_backward_hook(hook)
        else:
            handle = torch.nn.modules.module.register_module_full_backward_hook(hook)
        try:
            head.zero_grad()
            # Inputs that need gradients: a full backward hook then sees grad_input too.
            head(feats.clone().requires_grad_(), masks.clone().requires_grad_()
                 ).square().sum().backward()
        finally:
            handle.remove()
        calls.append(count)
        grads.append(head.convs[0].weight.grad.clone())
    assert calls[0] == calls[1] and len(calls[0]) >= (6 if where in ('relu', 'global') else 1)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def test_cat_channels_last_is_cat_in_nhwc_memory_with_the_same_gradients():
    torch.manual_seed(0)
    first, second = torch.randn(3, 5, 4, 6), torch.randn(3, 2, 4, 6)
    grad_out = torch.randn(3, 7, 4, 6)
    results = []
    for cat in (cat_channels_last, lambda a, b: torch.cat((a, b), 1)):
        a, b = first.clone().requires_grad_(), second.clone().requires_grad_()
        out = cat(a, b)
        out.backward(grad_out)
        results.append((out.detach(), a.grad, b.grad))
    assert results[0][0].is_contiguous(memory_format=torch.channels_last)
    for ours, reference in zip(*results):
        assert torch.equal(ours, reference)
    with torch.no_grad():  # the path that writes straight into channels-last memory
        out = cat_channels_last(first, second)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, results[1][0])


def one_image_batch():
    """One image, one 8x8-pixel instance at (4, 4); two positive RoIs on it."""
    masks = np.zeros((1, 16, 16), np.uint8)
    masks[0, 4:12, 4:12] = 1  # 64 px
    gt = InstanceData(masks=BitmapMasks(masks, 16, 16))
    # RoI 0 covers the whole instance, RoI 1 only its left half (32 px of 64).
    res = SimpleNamespace(pos_priors=torch.tensor([[4., 4., 12., 12.], [4., 4., 8., 12.]]),
                          pos_assigned_gt_inds=torch.tensor([0, 0]))
    # At RoI scale (4x4): RoI 0's target is all ones; RoI 1's target is all ones too (the
    # instance fills the half it covers).
    targets = torch.ones(2, 4, 4)
    preds = torch.full((2, 4, 4), -4.0)
    preds[0, :2] = 4.0   # predicts 8 of 16 px -> IoU 8 / 16
    preds[1] = 4.0       # predicts all 16 px; full GT area 16 / 0.5 = 32 -> IoU 16 / 32
    return [res], [gt], preds, targets


def test_get_targets_hand_computed():
    res, gts, preds, targets = one_image_batch()
    head = small_head()
    out = head.get_targets(res, gts, preds, targets, ConfigDict(mask_thr_binary=0.5))
    assert out.tolist() == pytest.approx([0.5, 0.5])
    # mask_thr_binary is a probability: logits of +-4 are probabilities 0.982 / 0.018
    out = head.get_targets(res, gts, preds, targets, ConfigDict(mask_thr_binary=0.99))
    assert out.tolist() == [0.0, 0.0]  # nothing predicted
    out = head.get_targets(res, gts, preds, targets, ConfigDict(mask_thr_binary=0.01))
    assert out.tolist() == pytest.approx([1.0, 0.5])  # everything in each RoI predicted


def test_loss_is_half_mean_squared_error_over_positive_targets():
    res, gts, preds, targets = one_image_batch()
    # A third RoI whose prediction is empty and whose instance is outside: target 0, ignored.
    res[0].pos_priors = torch.cat([res[0].pos_priors, torch.tensor([[0., 0., 2., 2.]])])
    res[0].pos_assigned_gt_inds = torch.tensor([0, 0, 0])
    preds = torch.cat([preds, torch.full((1, 4, 4), -4.0)])
    targets = torch.cat([targets, torch.zeros(1, 4, 4)])
    head = small_head()
    iou_pred = torch.tensor([0.9, 0.1, 0.7], requires_grad=True)
    loss = head.loss_and_target(iou_pred, preds, targets, res, gts,
                                ConfigDict(mask_thr_binary=0.5))['loss_mask_iou']
    expected = 0.5 * ((0.9 - 0.5)**2 + (0.1 - 0.5)**2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert iou_pred.grad[2] == 0 and iou_pred.grad[0] > 0 and iou_pred.grad[1] < 0


def test_loss_without_valid_targets_is_zero_and_connected():
    head = small_head()
    empty = SimpleNamespace(pos_priors=torch.zeros(0, 4),
                            pos_assigned_gt_inds=torch.zeros(0, dtype=torch.long))
    gts = [InstanceData(masks=BitmapMasks(np.zeros((0, 8, 8), np.uint8), 8, 8))]
    pred = head(torch.randn(0, 8, 14, 14), torch.randn(0, 28, 28))
    loss = head.loss_and_target(pred[:, 0], torch.zeros(0, 28, 28), torch.zeros(0, 28, 28),
                                [empty], gts, ConfigDict(mask_thr_binary=0.5))['loss_mask_iou']
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert head.fc_mask_iou.weight.grad is not None


def test_predict_by_feat_fields():
    head = small_head()
    results = InstanceData(scores=torch.tensor([0.9, 0.5, 0.2, 0.6]),
                           labels=torch.tensor([2, 0, 1, 2]))
    iou = torch.tensor([[0.1, 0.2, 0.8], [0.5, 0.0, 0.0], [0.3, 1.4, -0.2], [0.9, 0.9, -0.3]])
    out = head.predict_by_feat([iou], [results])[0]
    assert out.bbox_scores.tolist() == pytest.approx([0.9, 0.5, 0.2, 0.6])
    assert out.mask_ious.tolist() == pytest.approx([0.8, 0.5, 1.0, 0.0])  # clamped to [0, 1]
    assert out.scores.tolist() == pytest.approx([0.72, 0.25, 0.2, 0.0])


def test_predict_by_feat_checks_lengths():
    with pytest.raises(ValueError, match='2 MaskIoU predictions for 1 images'):
        small_head().predict_by_feat([torch.zeros(0, 3)] * 2, [InstanceData()])


def test_loss_under_autocast_is_fp32():
    head = small_head()
    res, gts, preds, targets = one_image_batch()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        pred = head(torch.randn(2, 8, 14, 14), torch.randn(2, 28, 28))
        loss = head.loss_and_target(pred[:, 0], preds.bfloat16(), targets.bfloat16(), res, gts,
                                    ConfigDict(mask_thr_binary=0.5))['loss_mask_iou']
    assert pred.dtype == torch.bfloat16
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
