"""RoI head of Mask Scoring R-CNN: Mask R-CNN's heads plus the MaskIoU head."""
import contextlib
import warnings
from typing import List, Optional, Tuple

import torch
from mmdet.models.roi_heads import StandardRoIHead
from mmdet.models.task_modules.samplers import SamplingResult
from mmdet.models.utils import empty_instances
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox2roi
from mmdet.utils import ConfigType, InstanceList
from torch import Tensor

from ..registry import MODELS
from ..utils.config import ConfigError
from .mask_iou_head import select_class

# test_cfg.rcnn.mask_iou_dtype: the precision the MaskIoU head predicts in.
MASK_IOU_DTYPES = {'float32': None, 'bfloat16': torch.bfloat16, 'float16': torch.float16}


def mask_iou_autocast_dtype(test_cfg) -> Optional[torch.dtype]:
    """The autocast dtype of the MaskIoU head at test time (None: the model's own precision).

    Args:
        test_cfg (dict, optional): The R-CNN test config; ``mask_iou_dtype`` is one of
            ``'float32'`` (default), ``'bfloat16'`` or ``'float16'``.
    """
    name = (test_cfg or {}).get('mask_iou_dtype', 'float32')
    if name not in MASK_IOU_DTYPES:
        raise ConfigError(f'test_cfg.rcnn.mask_iou_dtype must be one of '
                          f'{sorted(MASK_IOU_DTYPES)}, got {name!r}')
    return MASK_IOU_DTYPES[name]


def cpu_has_native(dtype: torch.dtype) -> Optional[bool]:
    """Whether oneDNN computes in ``dtype`` natively on this CPU (None: cannot tell)."""
    probe = {torch.bfloat16: '_is_mkldnn_bf16_supported',
             torch.float16: '_is_mkldnn_fp16_supported'}.get(dtype)
    try:
        return bool(getattr(torch.ops.mkldnn, probe)()) if probe else None
    except (AttributeError, RuntimeError):
        return None


@MODELS.register_module()
class MaskScoringRoIHead(StandardRoIHead):
    """Standard RoI head whose masks are scored by a MaskIoU head.

    `Mask Scoring R-CNN <https://arxiv.org/abs/1903.00241>`_. Training adds ``loss_mask_iou``;
    prediction sets ``scores`` to the mask score (classification score x predicted MaskIoU),
    and adds ``bbox_scores`` (classification score) and ``mask_ious`` (predicted MaskIoU).

    ``test_cfg.mask_iou_dtype`` (``'float32'``, the default, ``'bfloat16'`` or ``'float16'``)
    runs the MaskIoU head under autocast to that dtype at test time: on CPUs with native
    bfloat16 (AVX512-BF16, AMX) ``'bfloat16'`` makes the head about 2x faster, for predicted
    IoUs that differ by a few 1e-3 (docs/benchmarks.md).

    Args:
        mask_iou_head (dict): Config of the MaskIoU head.
        **kwargs: Arguments of :class:`mmdet.models.roi_heads.StandardRoIHead`; a mask head is
            required.
    """

    def __init__(self, mask_iou_head: ConfigType, **kwargs) -> None:
        if mask_iou_head is None:
            raise ConfigError('MaskScoringRoIHead needs a mask_iou_head config')
        if kwargs.get('mask_head') is None:
            raise ConfigError('MaskScoringRoIHead needs a mask_head config')
        super().__init__(**kwargs)
        self.mask_iou_head = MODELS.build(mask_iou_head)
        self._check_mask_iou_head_fits()
        mask_iou_autocast_dtype(self.test_cfg)  # a bad name fails at build time
        self._warned_emulated = False

    def _check_mask_iou_head_fits(self) -> None:
        """The MaskIoU head must expect the box head's classes and the mask branch's RoI
        features, checked at build time rather than as an index error when it picks a class or
        a shape error in its first FC layer. With a shared head (C4 models) the features are
        the shared head's output, whose shape is only known when it runs."""
        head = self.mask_iou_head
        if self.with_bbox and head.num_classes != self.bbox_head.num_classes:
            raise ConfigError(f'mask_iou_head.num_classes is {head.num_classes} but '
                             f'bbox_head.num_classes is {self.bbox_head.num_classes}: the '
                             f'MaskIoU head predicts one IoU per class of the box head')
        if self.with_shared_head:
            return
        extractor = self.bbox_roi_extractor if self.share_roi_extractor \
            else self.mask_roi_extractor
        size = getattr(extractor.roi_layers[0], 'output_size', None)
        if size is not None and tuple(size) != tuple(head.roi_feat_size):
            raise ConfigError(
                f'mask_iou_head.roi_feat_size is {tuple(head.roi_feat_size)} but the mask '
                f'branch\'s RoI features are {tuple(size)} (from the '
                f'{"bbox" if self.share_roi_extractor else "mask"}_roi_extractor)')
        channels = getattr(extractor, 'out_channels', None)
        if channels is not None and channels != head.in_channels:
            raise ConfigError(f'mask_iou_head.in_channels is {head.in_channels} but the mask '
                              f'branch\'s RoI features have {channels} channels')

    def forward(self, x: Tuple[Tensor], rpn_results_list: InstanceList,
                batch_data_samples: SampleList = None) -> tuple:
        """Tensor-only forward (for FLOPs counting and export): box, mask and MaskIoU outputs
        of the first 100 proposals."""
        rois = bbox2roi([res.bboxes for res in rpn_results_list])
        bbox_results = self._bbox_forward(x, rois)
        mask_results = self._mask_forward(x, rois[:100])
        cls_score = bbox_results['cls_score'][:100]
        labels = cls_score[:, :self.bbox_head.num_classes].argmax(dim=1)
        if self.mask_head.class_agnostic:
            labels = torch.zeros_like(labels)
        mask_iou_preds = self.mask_iou_head(mask_results['mask_feats'],
                                            select_class(mask_results['mask_preds'], labels))
        return (bbox_results['cls_score'], bbox_results['bbox_pred'],
                mask_results['mask_preds'], mask_iou_preds)

    def mask_loss(self, x: Tuple[Tensor], sampling_results: List[SamplingResult],
                  bbox_feats: Tensor, batch_gt_instances: InstanceList) -> dict:
        """Mask head loss plus the MaskIoU loss of the positive RoIs.

        Returns:
            dict: ``mask_preds``, ``mask_feats``, ``mask_targets``, and ``loss_mask``, a dict
            holding ``loss_mask`` and ``loss_mask_iou``.
        """
        if not self.share_roi_extractor:
            mask_results = self._mask_forward(
                x, bbox2roi([res.pos_priors for res in sampling_results]))
        else:
            pos_inds = torch.cat([
                torch.cat([res.pos_priors.new_ones(len(res.pos_priors), dtype=torch.bool),
                           res.neg_priors.new_zeros(len(res.neg_priors), dtype=torch.bool)])
                for res in sampling_results
            ])
            mask_results = self._mask_forward(x, pos_inds=pos_inds, bbox_feats=bbox_feats)

        mask_out = self.mask_head.loss_and_target(
            mask_preds=mask_results['mask_preds'],
            sampling_results=sampling_results,
            batch_gt_instances=batch_gt_instances,
            rcnn_train_cfg=self.train_cfg)
        mask_targets = mask_out['mask_targets']

        pos_labels = torch.cat([res.pos_gt_labels for res in sampling_results])
        mask_labels = torch.zeros_like(pos_labels) if self.mask_head.class_agnostic \
            else pos_labels
        pos_mask_preds = select_class(mask_results['mask_preds'], mask_labels)
        # As in mmdet and the authors' code, the MaskIoU loss also reaches the mask head
        # (through the pooled mask) and the RoI features.
        mask_iou_preds = self.mask_iou_head(mask_results['mask_feats'], pos_mask_preds)
        loss_mask_iou = self.mask_iou_head.loss_and_target(
            select_class(mask_iou_preds, pos_labels), pos_mask_preds, mask_targets,
            sampling_results, batch_gt_instances, self.train_cfg)

        losses = dict(mask_out['loss_mask'])
        losses.update(loss_mask_iou)
        mask_results.update(loss_mask=losses, mask_targets=mask_targets)
        return mask_results

    def predict_mask(self, x: Tuple[Tensor], batch_img_metas: List[dict],
                     results_list: InstanceList, rescale: bool = False) -> InstanceList:
        """Predict masks and their MaskIoU, and rank masks by the mask score.

        Returns:
            list[InstanceData]: Per image ``bboxes``, ``labels``, ``masks``, ``scores`` (mask
            score), ``bbox_scores`` (classification score) and ``mask_ious``.
        """
        mask_rois = bbox2roi([res.bboxes for res in results_list])
        if mask_rois.shape[0] == 0:
            results_list = empty_instances(
                batch_img_metas, mask_rois.device, task_type='mask',
                instance_results=results_list, mask_thr_binary=self.test_cfg.mask_thr_binary)
            for res in results_list:
                res.bbox_scores = res.scores.clone()
                res.mask_ious = res.scores.new_zeros((0, ))
            return results_list

        mask_results = self._mask_forward(x, mask_rois)
        mask_preds = mask_results['mask_preds']
        labels = torch.cat([res.labels for res in results_list])
        class_inds = torch.zeros_like(labels) if self.mask_head.class_agnostic else labels
        mask_feats = mask_results['mask_feats']
        dtype = mask_iou_autocast_dtype(self.test_cfg)  # read each call, like test_cfg's others
        if (dtype is not None and mask_feats.device.type == 'cpu'
                and not self._warned_emulated and cpu_has_native(dtype) is False):
            self._warned_emulated = True
            warnings.warn(f'test_cfg.rcnn.mask_iou_dtype={self.test_cfg.mask_iou_dtype!r}: '
                          f'this CPU has no native {dtype} arithmetic, so the '
                          f'MaskIoU head will be slower than in float32')
        with (torch.autocast(mask_feats.device.type, dtype=dtype)
              if dtype is not None else contextlib.nullcontext()):
            mask_iou_preds = self.mask_iou_head(mask_feats, select_class(mask_preds, class_inds))
        num_per_img = [len(res) for res in results_list]
        results_list = self.mask_head.predict_by_feat(
            mask_preds=mask_preds.split(num_per_img, 0),
            results_list=results_list,
            batch_img_metas=batch_img_metas,
            rcnn_test_cfg=self.test_cfg,
            rescale=rescale)
        return self.mask_iou_head.predict_by_feat(mask_iou_preds.split(num_per_img, 0),
                                                  results_list)
