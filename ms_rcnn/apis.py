"""High-level helpers: run a checkpoint over a test split, draw predictions, and infer."""
import os
import os.path as osp
from typing import List, NamedTuple, Optional, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_utils
import torch
from mmengine.config import Config
from mmdet.apis import DetInferencer, init_detector
from mmengine.runner import Runner
from pycocotools.coco import COCO
from tqdm import tqdm

from .analysis import concat_records, image_records, plot_report, summarize
from .evaluation import check_evaluable
from .utils.checkpoint import check_checkpoint_fits
from .utils.config import find_model_entry, load_config, package_config, package_file
from .utils.json_report import write_json


def build_test_loader(cfg: Config):
    """The test dataloader of a config, in this process (no workers), sampler as configured."""
    loader_cfg = cfg.test_dataloader.copy()
    loader_cfg.update(num_workers=0, persistent_workers=False)
    return Runner.build_dataloader(loader_cfg)


class Predictions(NamedTuple):
    """What :func:`predict_records` gives."""
    coco: COCO  #: the ground truth
    records: dict  #: every detection (see :data:`ms_rcnn.analysis.FIELDS`)
    rles: List[dict]  #: the detected masks, aligned with the records
    samples: list  #: the data samples of the first 8 images (on the CPU), for drawing
    cat_ids: list  #: the dataset's category ids, in label order
    has_mask_iou_head: bool  #: whether the model predicts ``mask_ious``


def predict_records(cfg: Config, checkpoint: str, device: str = 'cpu',
                    progress: bool = True) -> Predictions:
    """Run the checkpoint over the test split and record every detection."""
    model = init_detector(cfg, checkpoint, device=device)  # safe loading via ms_rcnn
    check_checkpoint_fits(model, None, checkpoint)
    loader = build_test_loader(cfg)
    dataset = loader.dataset
    if not getattr(dataset, 'ann_file', None):
        raise ValueError('the test dataset must be a COCO-style dataset with an ann_file')
    coco = COCO(dataset.ann_file)
    check_evaluable(coco, dataset.ann_file, ['bbox', 'segm'])
    cat_ids = list(dataset.cat_ids)
    records, rles, kept = [], [], []
    has_head = False
    with torch.no_grad():
        for data in tqdm(loader, desc='inference', disable=not progress):
            for sample in model.test_step(data):
                pred = sample.pred_instances.cpu()
                masks = pred.masks.numpy().astype(np.uint8)
                img_rles = [mask_utils.encode(np.asfortranarray(m)) for m in masks]
                cats = [cat_ids[int(label)] for label in pred.labels]
                has_iou = 'mask_ious' in pred  # ours sets it on images without detections too
                has_head |= has_iou
                records.append(image_records(
                    coco, sample.img_id, img_rles, cats,
                    (pred.bbox_scores if has_iou else pred.scores).numpy(),
                    pred.scores.numpy(), pred.mask_ious.numpy() if has_iou else None,
                    det_boxes=pred.bboxes.numpy()))
                rles += img_rles
                if len(kept) < 8:
                    kept.append(sample.cpu())
    return Predictions(coco, concat_records(records), rles, kept, cat_ids, has_head)


def analyse_checkpoint(config: str, checkpoint: str, out_dir: str,
                       data_root: Optional[str] = None, device: str = 'cpu',
                       progress: bool = True) -> dict:
    """The MaskIoU analysis of a checkpoint: writes ``summary.json`` and ``analysis.png``.

    Args:
        config (str): Config file.
        checkpoint (str): Checkpoint file.
        out_dir (str): Output directory.
        data_root (str, optional): Dataset root to use instead of the config's.
        device (str): Inference device. Defaults to 'cpu'.
        progress (bool): Show a progress bar. Defaults to True.

    Returns:
        dict: The summary (also written to ``out_dir/summary.json``), with the output paths.
    """
    cfg = load_config(config, data_root=data_root)
    predictions = predict_records(cfg, checkpoint, device, progress)
    records = predictions.records
    report = summarize(predictions.coco, records, predictions.rles,
                       predictions.has_mask_iou_head, predictions.cat_ids)
    os.makedirs(out_dir, exist_ok=True)
    report['figure'] = osp.join(out_dir, 'analysis.png')
    report['summary'] = osp.join(out_dir, 'summary.json')
    report['config'], report['checkpoint'] = config, checkpoint
    plot_report(records, report['figure'], title=osp.basename(config),
                has_mask_iou_head=predictions.has_mask_iou_head)
    write_json(report['summary'], report)
    report['_samples'] = predictions.samples
    return report


def draw_predictions(image: np.ndarray, pred, classes, score_thr: float = 0.3) -> np.ndarray:
    """Draw masks, boxes and both scores (classification and mask score) on a BGR image.

    Args:
        image (np.ndarray): BGR image (H, W, 3).
        pred (InstanceData): Predictions (CPU) with ``masks``, ``bboxes``, ``labels``,
            ``scores`` and optionally ``bbox_scores`` and ``mask_ious``.
        classes (Sequence[str]): Class names.
        score_thr (float): Draw detections whose mask score is at least this.

    Returns:
        np.ndarray: The drawn image.
    """
    canvas = image.copy()
    rng = np.random.default_rng(0)
    keep = (pred.scores >= score_thr).nonzero().flatten().tolist()
    for i in keep:
        colour = tuple(int(c) for c in rng.integers(60, 255, 3))
        mask = pred.masks[i].numpy().astype(bool)
        canvas[mask] = (0.5 * canvas[mask] + 0.5 * np.array(colour)).astype(np.uint8)
        x1, y1, x2, y2 = [int(v) for v in pred.bboxes[i].tolist()]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 1)
        name = classes[int(pred.labels[i])]
        if 'bbox_scores' in pred:
            text = (f'{name} cls {float(pred.bbox_scores[i]):.2f} '
                    f'iou {float(pred.mask_ious[i]):.2f} mask {float(pred.scores[i]):.2f}')
        else:
            text = f'{name} cls {float(pred.scores[i]):.2f}'
        cv2.putText(canvas, text, (x1, max(y1 - 3, 8)), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                    colour, 1, cv2.LINE_AA)
    return canvas


def save_visualizations(samples, classes, out_dir: str, score_thr: float = 0.3) -> List[str]:
    """Draw the predictions of each data sample on its image and save PNGs side by side with
    the original image. Returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for sample in samples:
        image = cv2.imread(sample.img_path)
        drawn = draw_predictions(image, sample.pred_instances, classes, score_thr)
        path = osp.join(out_dir, osp.splitext(osp.basename(sample.img_path))[0] + '_pred.png')
        cv2.imwrite(path, np.concatenate([image, drawn], axis=1))
        paths.append(path)
    return paths


#: The prediction fields of MS R-CNN beyond mmdet's (``scores`` is the mask score).
SCORING_FIELDS = ('bbox_scores', 'mask_ious')

#: How configs name ours (``_base_``, and the inferencer's ``model``).
PACKAGE_PREFIX = 'ms_rcnn::'


def resolve_model_name(model, weights: Optional[str]) -> Tuple[object, Optional[str]]:
    """The config file and weights that ``model`` names for :class:`MaskScoringDetInferencer`.

    ``'ms_rcnn::<path under configs/>'`` is our config; a name from our ``model-index.yml``
    (case-insensitive) is our config with the entry's published weights unless ``weights`` is
    given. Anything else (a file, a config object, another name) is returned as it is, for
    mmdet's inferencer to resolve.
    """
    if isinstance(model, str) and model.startswith(PACKAGE_PREFIX):
        return package_config(model[len(PACKAGE_PREFIX):]), weights
    if not isinstance(model, str) or osp.isfile(model):
        return model, weights
    entry = find_model_entry(model)
    if entry is None:
        return model, weights
    if weights is None:
        weights = entry['Weights']
        weights = weights[0] if isinstance(weights, list) else weights
    return package_file(entry['Config']), weights


class MaskScoringDetInferencer(DetInferencer):
    """mmdet's ``DetInferencer`` whose prediction dicts keep MS R-CNN's scores.

    mmdet's dicts (and ``out_dir/preds/*.json``) hold ``labels``, ``scores``, ``bboxes`` and
    ``masks`` only; these also hold ``bbox_scores`` (classification score) and ``mask_ious``
    (predicted MaskIoU), with ``scores`` the mask score as before. Takes the arguments of
    :class:`mmdet.apis.DetInferencer`; for instance predictions (not panoptic ones).

    More differences: ``model`` may name one of our configs as ``'ms_rcnn::<path under
    configs/>'``; a model name from our ``model-index.yml`` (``mim search ms_rcnn``, e.g.
    ``'ms-rcnn_r50-caffe_fpn_1x_coco'``) means our config and its published weights, where
    mmdet's inferencer would build mmdet's own MS R-CNN of that name (other names still go to
    mmdet's model zoo); and a checkpoint that does not fit the model (other classes, or a
    Mask R-CNN checkpoint for an MS R-CNN config) is refused (``CheckpointMismatchError``)
    where mmdet's inferencer prints the mismatch and predicts with randomly initialised heads.

    Example:
        >>> import ms_rcnn
        >>> from ms_rcnn.apis import MaskScoringDetInferencer
        >>> inferencer = MaskScoringDetInferencer(CONFIG, CHECKPOINT, device='cpu')
        >>> inferencer('image.jpg', out_dir='out', no_save_pred=False)['predictions'][0]
    """

    def __init__(self, model=None, weights: Optional[str] = None, *args, **kwargs) -> None:
        model, weights = resolve_model_name(model, weights)
        self._weights_file = weights
        super().__init__(model, weights, *args, **kwargs)

    def _load_weights_to_model(self, model, checkpoint: Optional[dict], cfg) -> None:
        """mmdet's loading, after refusing a checkpoint that leaves parameters unloaded."""
        if checkpoint is not None:
            check_checkpoint_fits(model, checkpoint, str(self._weights_file or
                                                         'of the model-zoo entry'))
        super()._load_weights_to_model(model, checkpoint, cfg)

    def pred2dict(self, data_sample, pred_out_dir: str = '') -> dict:
        """mmdet's prediction dict plus :data:`SCORING_FIELDS`, saved where mmdet saves it."""
        result = super().pred2dict(data_sample, pred_out_dir='')
        pred = data_sample.get('pred_instances')
        for field in SCORING_FIELDS:
            if pred is not None and field in pred:
                result[field] = pred[field].detach().cpu().tolist()
        if pred_out_dir:
            if data_sample.get('img_path'):
                name = osp.splitext(osp.basename(data_sample.img_path))[0]
            else:  # an array input (mmdet's own naming fails on its img_path of None)
                name = str(self.num_predicted_imgs)
                self.num_predicted_imgs += 1
            write_json(osp.join(pred_out_dir, 'preds', f'{name}.json'), result)
        return result
