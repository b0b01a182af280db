"""The detector end to end on CPU: configs, state dict compatibility, loss and predict."""
import copy
import glob
import os.path as osp
import warnings

import mmdet
import numpy as np
import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmdet.structures.mask import BitmapMasks
from mmdet.testing import demo_mm_inputs
from mmdet.utils import register_all_modules
from mmengine.config import Config

import ms_rcnn
from ms_rcnn.models import mask_scoring_roi_head as roi_head_module
from ms_rcnn.testing import REPO_ROOT, small_model_cfg

register_all_modules()
CONFIGS = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'ms_rcnn', '*.py')))


def build(cfg):
    torch.manual_seed(0)
    model = MMDET_MODELS.build(copy.deepcopy(cfg))
    model.init_weights()
    return model


@pytest.fixture(scope='module')
def model_cfg():
    return small_model_cfg(num_classes=3)


def inputs(num_items=(3, 2), with_mask=True):
    return demo_mm_inputs(len(num_items), [[3, 128, 128], [3, 96, 128]][:len(num_items)],
                          num_items=list(num_items), num_classes=3, with_mask=with_mask)


def test_all_required_configs_exist():
    names = {osp.basename(c) for c in CONFIGS}
    required = {
        'ms-rcnn_r50_fpn_1x_coco.py', 'ms-rcnn_r50_fpn_2x_coco.py',
        'ms-rcnn_r50-caffe_fpn_1x_coco.py', 'ms-rcnn_r50-caffe_fpn_2x_coco.py',
        'ms-rcnn_r101_fpn_1x_coco.py', 'ms-rcnn_r101-caffe_fpn_1x_coco.py',
        'ms-rcnn_r101-caffe_fpn_2x_coco.py', 'ms-rcnn_x101-32x4d_fpn_1x_coco.py',
        'ms-rcnn_x101-64x4d_fpn_1x_coco.py', 'ms-rcnn_x101-64x4d_fpn_2x_coco.py',
        'ms-rcnn_r50_fpn_amp-1x_coco.py'
    }
    assert required <= names


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.basename(c) for c in CONFIGS])
def test_config_parses_and_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.model.type == 'ms_rcnn.MaskScoringRCNN'
    assert cfg.val_evaluator.type == 'ms_rcnn.MaskScoringCocoMetric'
    assert 'ms_rcnn' in cfg.custom_imports.imports
    model = MMDET_MODELS.build(cfg.model)  # init_cfg (pretrained weights) is not run here
    assert isinstance(model, ms_rcnn.models.MaskScoringRCNN)
    assert isinstance(model.roi_head.mask_iou_head, ms_rcnn.models.MaskIoUHead)
    assert model.roi_head.mask_iou_head.fc_mask_iou.out_features == 80


def test_mmdet_classes_stay_mmdet_and_ours_are_scoped():
    from mmdet.models.roi_heads import MaskScoringRoIHead as MMDetRoIHead
    assert MMDET_MODELS.get('MaskScoringRoIHead') is MMDetRoIHead
    assert MMDET_MODELS.get('ms_rcnn.MaskScoringRoIHead') is ms_rcnn.models.MaskScoringRoIHead
    assert MMDET_MODELS.get('ms_rcnn.MaskIoUHead') is ms_rcnn.models.MaskIoUHead


def test_state_dict_equals_mmdets_detector_key_for_key():
    ours = MMDET_MODELS.build(
        Config.fromfile(osp.join(REPO_ROOT, 'configs/ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py')).model)
    theirs = MMDET_MODELS.build(
        Config.fromfile(osp.join(osp.dirname(mmdet.__file__),
                                 '.mim/configs/ms_rcnn/ms-rcnn_r50_fpn_1x_coco.py')).model)
    assert type(theirs).__module__.startswith('mmdet.')
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert list(ours_sd) == list(theirs_sd)
    assert all(ours_sd[k].shape == theirs_sd[k].shape for k in ours_sd)
    # An mmdet checkpoint loads strictly into ours.
    ours.load_state_dict(theirs_sd, strict=True)


def test_loss_end_to_end_with_finite_values(model_cfg):
    model = build(model_cfg)
    data = model.data_preprocessor(inputs(), True)
    losses = model(**data, mode='loss')
    assert {'loss_mask', 'loss_mask_iou', 'loss_cls', 'loss_bbox'} <= set(losses)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    assert losses['loss_mask_iou'].dtype == torch.float32
    assert losses['loss_mask_iou'].item() >= 0


def test_mask_iou_loss_reaches_mask_head_and_iou_head(model_cfg):
    model = build(model_cfg)
    data = model.data_preprocessor(inputs(), True)
    losses = model(**data, mode='loss')
    losses['loss_mask_iou'].backward()
    roi_head = model.roi_head
    iou_grad = roi_head.mask_iou_head.fc_mask_iou.weight.grad
    mask_grad = roi_head.mask_head.convs[0].conv.weight.grad
    assert iou_grad is not None and iou_grad.abs().sum() > 0
    assert mask_grad is not None and mask_grad.abs().sum() > 0


def record_calls(module):
    """A list that collects ``(inputs, output)`` of each forward call of ``module``."""
    calls = []
    module.register_forward_hook(lambda mod, args, out: calls.append((args, out)))
    return calls


@pytest.mark.parametrize('class_agnostic', [False, True])
def test_mask_iou_head_is_trained_on_each_positives_class(model_cfg, class_agnostic):
    """The MaskIoU head sees the mask of the positive's ground-truth class (class 0's of a
    class-agnostic mask head), and its loss takes the IoU output of that class."""
    cfg = copy.deepcopy(model_cfg)
    cfg.roi_head.mask_head.class_agnostic = class_agnostic
    model = build(cfg)
    mask_calls = record_calls(model.roi_head.mask_head)
    iou_calls = record_calls(model.roi_head.mask_iou_head)
    iou_head, seen = model.roi_head.mask_iou_head, {}
    loss_and_target = iou_head.loss_and_target
    iou_head.loss_and_target = lambda *args: seen.setdefault('args', args) and \
        loss_and_target(*args)
    model(**model.data_preprocessor(inputs(), True), mode='loss')
    iou_pred, pos_mask_preds, _, sampling_results = seen['args'][:4]
    labels = torch.cat([res.pos_gt_labels for res in sampling_results])
    assert (labels != 0).any() and len(mask_calls) == len(iou_calls) == 1
    rows = torch.arange(len(labels))
    mask_preds = mask_calls[0][1]
    expected_masks = mask_preds[:, 0] if class_agnostic else mask_preds[rows, labels]
    (_, iou_input), iou_out = iou_calls[0]
    assert torch.equal(iou_input, expected_masks) and torch.equal(pos_mask_preds, expected_masks)
    assert torch.equal(iou_pred, iou_out[rows, labels])


def test_predicted_mask_ious_are_of_each_detections_class(model_cfg):
    model = build(model_cfg).eval()
    mask_calls = record_calls(model.roi_head.mask_head)
    iou_calls = record_calls(model.roi_head.mask_iou_head)
    with torch.no_grad():
        results = model(**model.data_preprocessor(inputs(), False), mode='predict')
    labels = torch.cat([res.pred_instances.labels for res in results])
    mask_ious = torch.cat([res.pred_instances.mask_ious for res in results])
    assert (labels != 0).any() and len(mask_calls) == len(iou_calls) == 1
    rows = torch.arange(len(labels))
    (_, iou_input), iou_out = iou_calls[0]
    assert torch.equal(iou_input, mask_calls[0][1][rows, labels])
    assert torch.equal(mask_ious, iou_out[rows, labels].clamp(0, 1))


def test_images_without_ground_truth(model_cfg):
    model = build(model_cfg)
    data = model.data_preprocessor(inputs(num_items=(0, 0)), True)
    losses = model(**data, mode='loss')
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    assert losses['loss_mask_iou'].item() == 0.0
    total.backward()  # every head stays in the graph
    assert model.roi_head.mask_iou_head.fc_mask_iou.weight.grad is not None


def test_zero_area_ground_truth_masks(model_cfg):
    model = build(model_cfg)
    packed = inputs()
    gt = packed['data_samples'][0].gt_instances
    gt.masks = BitmapMasks(np.zeros_like(gt.masks.masks), *gt.masks.masks.shape[1:])
    data = model.data_preprocessor(packed, True)
    total, _ = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(total)


def test_predict_fields(model_cfg):
    model = build(model_cfg).eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(inputs(), False), mode='predict')
    pred = results[0].pred_instances
    assert len(pred) > 0
    assert {'scores', 'bbox_scores', 'mask_ious', 'masks', 'labels', 'bboxes'} <= set(pred.keys())
    assert torch.all((pred.mask_ious >= 0) & (pred.mask_ious <= 1))
    assert torch.allclose(pred.scores, pred.bbox_scores * pred.mask_ious)
    assert pred.masks.shape[-2:] == (128, 128)


def test_predict_without_detections(model_cfg):
    cfg = copy.deepcopy(model_cfg)
    cfg.test_cfg.rcnn.score_thr = 1.01  # nothing survives
    model = build(cfg).eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(inputs(), False), mode='predict')
    for res in results:
        pred = res.pred_instances
        assert len(pred) == 0
        assert pred.bbox_scores.shape == (0, ) and pred.mask_ious.shape == (0, )


@pytest.mark.parametrize('dtype', ['bfloat16', 'float16'])
def test_mask_iou_dtype_runs_the_head_in_that_precision(model_cfg, dtype):
    """test_cfg.rcnn.mask_iou_dtype: same detections, IoUs from a head run in ``dtype``."""
    reference = build(model_cfg).eval()
    cfg = copy.deepcopy(model_cfg)
    cfg.test_cfg.rcnn.mask_iou_dtype = dtype
    model = build(cfg).eval()
    seen = []
    model.roi_head.mask_iou_head.convs[0].register_forward_hook(
        lambda mod, args, out: seen.append(out.dtype))
    data = model.data_preprocessor(inputs(), False)
    native = roi_head_module.cpu_has_native(getattr(torch, dtype))
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        want = reference(**copy.deepcopy(data), mode='predict')
        got = model(**data, mode='predict')
    assert seen == [getattr(torch, dtype)]
    emulated = [w for w in caught if 'no native' in str(w.message)]
    assert len(emulated) == (1 if native is False else 0), [str(w.message) for w in caught]
    for a, b in zip(got, want):
        a, b = a.pred_instances, b.pred_instances
        assert len(a) > 0
        assert torch.equal(a.bboxes, b.bboxes) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.masks, b.masks) and torch.equal(a.bbox_scores, b.bbox_scores)
        assert a.mask_ious.dtype == torch.float32
        assert torch.allclose(a.mask_ious, b.mask_ious, atol=2e-2)
        assert torch.allclose(a.scores, a.bbox_scores * a.mask_ious)


def test_mask_iou_dtype_set_after_building_takes_effect(model_cfg):
    # like score_thr and mask_thr_binary, read at each call (notebooks, benchmarks)
    model = build(model_cfg).eval()
    seen = []
    model.roi_head.mask_iou_head.convs[0].register_forward_hook(
        lambda mod, args, out: seen.append(out.dtype))
    data = model.data_preprocessor(inputs(), False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # a CPU without native bfloat16 warns
        model(**copy.deepcopy(data), mode='predict')
        model.roi_head.test_cfg.mask_iou_dtype = 'bfloat16'
        model(**data, mode='predict')
    assert seen == [torch.float32, torch.bfloat16]


def test_mask_iou_dtype_is_checked_when_built(model_cfg):
    cfg = copy.deepcopy(model_cfg)
    cfg.test_cfg.rcnn.mask_iou_dtype = 'int8'
    with pytest.raises(ValueError, match=r"test_cfg.rcnn.mask_iou_dtype .*'int8'"):
        build(cfg)


def test_tensor_forward(model_cfg):
    model = build(model_cfg).eval()
    with torch.no_grad():
        out = model(**model.data_preprocessor(inputs(), False), mode='tensor')
    roi_outs = out[-1]  # cls_score, bbox_pred, mask_preds, mask_iou_preds
    assert len(roi_outs) == 4 and roi_outs[-1].shape[-1] == 3
    # the MaskIoU head scores each RoI's mask of its top-scoring class
    iou_calls = record_calls(model.roi_head.mask_iou_head)
    with torch.no_grad():
        cls_score, _, mask_preds, iou_preds = \
            model(**model.data_preprocessor(inputs(), False), mode='tensor')[-1]
    labels = cls_score[:100, :3].argmax(1)
    assert (labels != 0).any() and len(iou_calls) == 1
    (_, iou_input), iou_out = iou_calls[0]
    assert torch.equal(iou_input, mask_preds[torch.arange(len(labels)), labels])
    assert torch.equal(iou_preds, iou_out)


def test_class_agnostic_mask_head(model_cfg):
    cfg = copy.deepcopy(model_cfg)
    cfg.roi_head.mask_head.class_agnostic = True
    model = build(cfg)
    losses = model(**model.data_preprocessor(inputs(), True), mode='loss')
    assert torch.isfinite(losses['loss_mask_iou']) and losses['loss_mask_iou'] > 0
    model.eval()
    with torch.no_grad():
        roi_outs = model(**model.data_preprocessor(inputs(), False), mode='tensor')[-1]
        results = model(**model.data_preprocessor(inputs(), False), mode='predict')
    assert roi_outs[2].shape[1] == 1 and roi_outs[3].shape[-1] == 3
    assert len(results[0].pred_instances.mask_ious) > 0


def test_shared_head_models_are_not_checked_against_the_extractor():
    # C4: the MaskIoU head sees the shared head's output (2048 channels, 8x8 from 16x16 RoIs),
    # not the extractor's; the build-time check must not refuse it.
    cfg = Config.fromfile(osp.join(osp.dirname(mmdet.__file__), '.mim', 'configs', '_base_',
                                   'models', 'mask-rcnn_r50-caffe-c4.py')).model
    cfg.roi_head.type = 'ms_rcnn.MaskScoringRoIHead'
    cfg.roi_head.bbox_roi_extractor.roi_layer.output_size = 16
    cfg.roi_head.mask_iou_head = dict(type='ms_rcnn.MaskIoUHead', roi_feat_size=8,
                                      in_channels=2048, num_classes=80)
    model = MMDET_MODELS.build(cfg)  # no init_weights: it would fetch pretrained weights
    assert model.roi_head.with_shared_head and model.roi_head.mask_iou_head.in_channels == 2048


@pytest.mark.parametrize('field, value, message', [
    ('roi_feat_size', 7, r'mask_iou_head.roi_feat_size is \(7, 7\) but .* \(14, 14\)'),
    ('in_channels', 64, r'mask_iou_head.in_channels is 64 but .* 256 channels'),
    ('num_classes', 1, r'mask_iou_head.num_classes is 1 but bbox_head.num_classes is 3'),
])
def test_mask_iou_head_must_fit_the_mask_features(model_cfg, field, value, message):
    cfg = copy.deepcopy(model_cfg)
    cfg.roi_head.mask_iou_head[field] = value
    with pytest.raises(ValueError, match=message):
        build(cfg)


SMALL_DATA = sorted(glob.glob(osp.join(REPO_ROOT, 'configs', 'small_data', '*.py')))


@pytest.mark.parametrize('path', SMALL_DATA, ids=[osp.basename(c) for c in SMALL_DATA])
def test_small_data_config_builds_and_twins_differ_only_in_scoring(path):
    cfg = Config.fromfile(path)
    model = MMDET_MODELS.build(cfg.model)
    name = osp.basename(path)
    if name.startswith('ms-rcnn'):
        assert isinstance(model, ms_rcnn.models.MaskScoringRCNN)
        twin = osp.join(osp.dirname(path), name.replace('ms-rcnn', 'mask-rcnn'))
        if osp.isfile(twin):
            theirs = MMDET_MODELS.build(Config.fromfile(twin).model).state_dict()
            ours = model.state_dict()
            extra = {k for k in ours if k not in theirs}
            assert extra and all(k.startswith('roi_head.mask_iou_head.') for k in extra)
            assert all(ours[k].shape == theirs[k].shape for k in theirs)
            twin_cfg = Config.fromfile(twin)
            for key in ('train_dataloader', 'param_scheduler', 'optim_wrapper', 'randomness'):
                assert cfg[key] == twin_cfg[key]
    else:
        assert type(model).__name__ == 'MaskRCNN'


@pytest.mark.parametrize('path', CONFIGS + SMALL_DATA, ids=osp.basename)
def test_configs_check_num_classes_against_the_dataset(path):
    hooks = [h.type for h in Config.fromfile(path).custom_hooks]
    assert 'NumClassCheckHook' in hooks and 'ms_rcnn.CheckFiniteLossHook' in hooks


@pytest.mark.parametrize('path', SMALL_DATA, ids=[osp.basename(c) for c in SMALL_DATA])
def test_small_data_children_with_more_classes_keep_a_usable_palette(path):
    # mmengine merges the child's metainfo into ours: a palette of ours would stay one colour
    # long and mmdet's visualizer would refuse the child's second class.
    from mmdet.visualization.palette import get_palette
    cfg = Config.fromfile(path)
    cfg.merge_from_dict(dict(metainfo=dict(classes=('a', 'b', 'c'))))
    assert len(get_palette(cfg.metainfo.get('palette'), 3)) == 3
