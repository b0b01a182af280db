"""The MaskIoU head of Mask Scoring R-CNN."""
from typing import List, Sequence

import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.model import BaseModule
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.utils import ConfigType, InstanceList, OptMultiConfig
from torch import Tensor
from torch.nn.modules.utils import _pair

from ..registry import MODELS
from ..utils.config import ConfigError
from .mask_iou_math import batch_area_ratios, mask_iou_targets
from .onednn_linear import OneDNNLinear, tracing_or_compiling


@MODELS.register_module()
class MaskIoUHead(BaseModule):
    """Regresses the IoU of each predicted mask with its ground-truth instance.

    From `Mask Scoring R-CNN <https://arxiv.org/abs/1903.00241>`_: the input is the RoI feature
    of the mask branch concatenated with the 2x2 max-pooled sigmoid of the predicted mask of the
    RoI's class; four 3x3 convs (the last with stride 2), two FC layers and one output per class.

    Layer names, shapes and the public methods are those of mmdet's ``MaskIoUHead``, so
    checkpoints and calling code written for it work unchanged. Differences: targets binarise
    the predicted mask at probability ``mask_thr_binary`` (the authors' code and mmdet
    threshold raw logits), the area ratio is vectorised on the proposals' device for bitmap and
    polygon masks, empty inputs never give NaN, the loss runs in fp32 under autocast,
    predictions keep the classification score and the predicted MaskIoU beside the mask score,
    and on the CPU the convs run in channels-last layout and, at fp32 inference, the FC layers
    on oneDNN's matmul (both faster, same results to float rounding).

    Args:
        num_convs (int): Number of 3x3 convs. Defaults to 4.
        num_fcs (int): Number of hidden FC layers. Defaults to 2.
        roi_feat_size (int): Side of the RoI feature. Defaults to 14.
        in_channels (int): Channels of the RoI feature. Defaults to 256.
        conv_out_channels (int): Channels of the convs. Defaults to 256.
        fc_out_channels (int): Width of the FC layers. Defaults to 1024.
        num_classes (int): Number of classes (one IoU output each). Defaults to 80.
        loss_iou (dict): Loss on the IoU of the target class; the default is the paper's L2
            loss, ``0.5 * mean((pred - target) ** 2)`` as in the authors' code.
        init_cfg (dict or list[dict], optional): Initialisation config.
    """

    def __init__(self,
                 num_convs: int = 4,
                 num_fcs: int = 2,
                 roi_feat_size: int = 14,
                 in_channels: int = 256,
                 conv_out_channels: int = 256,
                 fc_out_channels: int = 1024,
                 num_classes: int = 80,
                 loss_iou: ConfigType = dict(type='MSELoss', loss_weight=0.5),
                 init_cfg: OptMultiConfig = [
                     dict(type='Kaiming', override=dict(name='convs')),
                     dict(type='Caffe2Xavier', override=dict(name='fcs')),
                     dict(type='Normal', std=0.01, override=dict(name='fc_mask_iou'))
                 ]) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_convs < 1:
            raise ConfigError(f'mask_iou_head.num_convs must be >= 1 (the last conv halves '
                              f'the size), got {num_convs}')
        self.in_channels = in_channels
        self.roi_feat_size = _pair(roi_feat_size)
        self.conv_out_channels = conv_out_channels
        self.fc_out_channels = fc_out_channels
        self.num_classes = num_classes

        # The first conv sees the RoI feature plus one channel of pooled mask.
        conv_in = [in_channels + 1] + [conv_out_channels] * (num_convs - 1)
        self.convs = nn.ModuleList(
            nn.Conv2d(c, conv_out_channels, 3, stride=2 if i == num_convs - 1 else 1, padding=1)
            for i, c in enumerate(conv_in))
        feat_h, feat_w = _pair(roi_feat_size)
        # The last conv (3x3, stride 2, padding 1) maps a side n to ceil(n / 2); mmdet's n // 2
        # is the same for the paper's 14 but breaks the first FC layer for odd sizes.
        fc_in = [conv_out_channels * ((feat_h + 1) // 2) * ((feat_w + 1) // 2)] + \
            [fc_out_channels] * (num_fcs - 1)
        # OneDNNLinear is nn.Linear (same parameters and hooks) with faster fp32 CPU inference.
        self.fcs = nn.ModuleList(OneDNNLinear(c, fc_out_channels) for c in fc_in)
        self.fc_mask_iou = OneDNNLinear(fc_out_channels, num_classes)
        self.relu = nn.ReLU()
        self.max_pool = nn.MaxPool2d(2, 2)
        self.loss_iou = MODELS.build(loss_iou)

    def forward(self, mask_feat: Tensor, mask_preds: Tensor) -> Tensor:
        """Predict the MaskIoU of every class.

        Args:
            mask_feat (Tensor): RoI features of the mask branch, shape (N, C, 14, 14).
            mask_preds (Tensor): Mask logits of each RoI's class, shape (N, 28, 28).

        Returns:
            Tensor: Predicted IoUs, shape (N, num_classes).
        """
        # type_as, not .to(dtype): a traced graph then follows the features' dtype.
        pooled = self.max_pool(mask_preds.sigmoid().unsqueeze(1)).type_as(mask_feat)
        if mask_feat.device.type == 'cpu':
            # oneDNN runs these convs on 14x14 maps about 1.2x faster in NHWC, forward and
            # backward alike; the results are the same (the FC input is flattened in NCHW order).
            x = cat_channels_last(mask_feat, pooled)
        else:
            x = torch.cat((mask_feat, pooled), 1)
        for conv in self.convs:
            x = self._relu(conv, x)
        x = x.flatten(1)
        for fc in self.fcs:
            x = self._relu(fc, x)
        return self.fc_mask_iou(x)

    def _relu(self, layer: nn.Module, x: Tensor) -> Tensor:
        """ReLU of ``layer(x)``, in place when no forward hook can hold that output.

        In place saves writing a second 20 MB map per conv for 100 RoIs (2-4% of the head's
        CPU inference, docs/benchmarks.md); no conv or FC backward reads its output. With a
        forward or backward hook on the layer, any hook on ``self.relu`` or on every module
        (feature extraction, Grad-CAM, guided backpropagation), ``self.relu`` runs out of
        place, so each hook is called and keeps what it was given, as with mmdet's head.
        """
        out = layer(x)
        if _holds_output(layer) or _has_hooks(self.relu) or _has_global_hooks():
            return self.relu(out)
        return out.relu_()

    def get_targets(self, sampling_results: List[SamplingResult],
                    batch_gt_instances: InstanceList, mask_preds: Tensor,
                    mask_targets: Tensor, rcnn_train_cfg: ConfigDict) -> Tensor:
        """IoU targets of the positive RoIs of a batch.

        Args:
            sampling_results (list[SamplingResult]): Sampling results of each image.
            batch_gt_instances (list[InstanceData]): Ground truth of each image, with ``masks``.
            mask_preds (Tensor): Mask logits of each positive's class, shape (P, S, S).
            mask_targets (Tensor): Binary mask targets, shape (P, S, S).
            rcnn_train_cfg (ConfigDict): R-CNN train config; ``mask_thr_binary`` (probability,
                default 0.5) binarises the predictions.

        Returns:
            Tensor: fp32 IoU targets in [0, 1], shape (P,).
        """
        ratios = batch_area_ratios(
            [gt.masks for gt in batch_gt_instances],
            [res.pos_priors for res in sampling_results],
            [res.pos_assigned_gt_inds for res in sampling_results],
        ) if sampling_results else mask_targets.new_zeros((0, ))
        if ratios.numel() != mask_targets.size(0):
            raise ValueError(f'{mask_targets.size(0)} mask targets but {ratios.numel()} '
                             'positive RoIs in the sampling results')
        thr = (rcnn_train_cfg or {}).get('mask_thr_binary', 0.5)
        return mask_iou_targets(mask_preds.detach(), mask_targets, ratios, thr)

    def loss_and_target(self, mask_iou_pred: Tensor, mask_preds: Tensor, mask_targets: Tensor,
                        sampling_results: List[SamplingResult],
                        batch_gt_instances: InstanceList, rcnn_train_cfg: ConfigDict) -> dict:
        """The MaskIoU loss over positive RoIs whose target IoU is above 0.

        Args:
            mask_iou_pred (Tensor): Predicted IoU of each positive's class, shape (P,).
            mask_preds (Tensor): Mask logits of each positive's class, shape (P, S, S).
            mask_targets (Tensor): Binary mask targets, shape (P, S, S).
            sampling_results (list[SamplingResult]): Sampling results of each image.
            batch_gt_instances (list[InstanceData]): Ground truth of each image.
            rcnn_train_cfg (ConfigDict): R-CNN train config.

        Returns:
            dict: ``loss_mask_iou`` (fp32 scalar; 0, still attached to the graph, when no
            RoI has a target above 0).
        """
        targets = self.get_targets(sampling_results, batch_gt_instances, mask_preds,
                                   mask_targets, rcnn_train_cfg)
        # Weighting instead of indexing: no host sync, and with no valid RoI the loss is an
        # exact 0 that still reaches every parameter (DDP needs them all in the graph).
        valid = (targets > 0).float()
        loss = self.loss_iou(mask_iou_pred.float(), targets, weight=valid,
                             avg_factor=valid.sum().clamp(min=1.0))
        return dict(loss_mask_iou=loss)

    def predict_by_feat(self, mask_iou_preds: Sequence[Tensor],
                        results_list: InstanceList) -> InstanceList:
        """Turn classification scores into mask scores.

        Args:
            mask_iou_preds (Sequence[Tensor]): Predicted IoUs of each image, each of shape
                (n, num_classes).
            results_list (list[InstanceData]): Detections of each image, with ``scores`` and
                ``labels``.

        Returns:
            list[InstanceData]: The same results with ``scores`` = classification score x
            predicted MaskIoU of the predicted class (clamped to [0, 1]), ``bbox_scores`` the
            classification score and ``mask_ious`` the predicted MaskIoU.
        """
        if len(mask_iou_preds) != len(results_list):
            raise ValueError(f'{len(mask_iou_preds)} MaskIoU predictions for '
                             f'{len(results_list)} images')
        for results, iou_pred in zip(results_list, mask_iou_preds):
            bbox_scores = results.scores
            ious = select_class(iou_pred, results.labels).float().clamp(0.0, 1.0)
            results.bbox_scores = bbox_scores
            results.mask_ious = ious.to(bbox_scores.dtype)
            results.scores = bbox_scores * results.mask_ious
        return results_list


def cat_channels_last(first: Tensor, second: Tensor) -> Tensor:
    """``torch.cat((first, second), 1)``, contiguous in channels-last memory.

    At inference both inputs are written straight into channels-last memory: one copy of
    ``first`` instead of two (concatenate, then convert), 3-4% of the MaskIoU head's CPU
    inference for 100 RoIs. With autograd it concatenates and converts: forward and backward
    took 1-2% less than with two slice copies, near that A/B's noise (docs/benchmarks.md).
    Traced, exported or compiled, it concatenates and converts too, so the graph holds no
    buffer of a fixed device and dtype.

    Args:
        first (Tensor): Shape (N, C1, H, W).
        second (Tensor): Shape (N, C2, H, W), same dtype and device.

    Returns:
        Tensor: Shape (N, C1 + C2, H, W), contiguous in ``torch.channels_last``.
    """
    if (torch.is_grad_enabled() and (first.requires_grad or second.requires_grad)) \
            or tracing_or_compiling():
        return torch.cat((first, second), 1).contiguous(memory_format=torch.channels_last)
    n, c1, h, w = first.shape
    out = torch.empty((n, c1 + second.size(1), h, w), dtype=first.dtype, device=first.device,
                      memory_format=torch.channels_last)
    out[:, :c1] = first
    out[:, c1:] = second
    return out


def select_class(per_class: Tensor, labels: Tensor) -> Tensor:
    """Pick each row's entry of its label.

    Args:
        per_class (Tensor): Shape (N, num_classes, ...).
        labels (Tensor): Shape (N,).

    Returns:
        Tensor: Shape (N, ...).
    """
    return per_class[torch.arange(labels.numel(), device=labels.device), labels]


def _holds_output(module: nn.Module) -> bool:
    """Whether a hook on ``module`` holds its output: a forward hook is given it, and a full
    backward hook wraps it in a view that must not be changed in place."""
    return bool(module._forward_hooks or module._backward_hooks or module._backward_pre_hooks)


def _has_hooks(module: nn.Module) -> bool:
    """Whether any forward or backward hook (or pre-hook) is registered on ``module`` itself."""
    return bool(_holds_output(module) or module._forward_pre_hooks)


def _has_global_hooks() -> bool:
    """Whether any forward or backward hook (or pre-hook) is registered for every module."""
    hooks = nn.modules.module
    return bool(hooks._global_forward_hooks or hooks._global_forward_pre_hooks
                or hooks._global_backward_hooks or hooks._global_backward_pre_hooks)
