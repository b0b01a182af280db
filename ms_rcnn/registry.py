"""ms_rcnn's registries: children of MMDetection's, with scope ``ms_rcnn``.

Our modules keep the paper's names (``MaskIoUHead``, ``MaskScoringRoIHead``,
``MaskScoringRCNN``) without touching mmdet's classes of the same names: configs refer to them
as ``ms_rcnn.<Name>`` (works under ``default_scope='mmdet'``), and anything else is looked up
in mmdet's registries through the parent link.
"""
from mmdet.registry import DATASETS as MMDET_DATASETS
from mmdet.registry import HOOKS as MMDET_HOOKS
from mmdet.registry import METRICS as MMDET_METRICS
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMDET_MODELS, scope='ms_rcnn', locations=['ms_rcnn.models'])
METRICS = Registry('metric', parent=MMDET_METRICS, scope='ms_rcnn', locations=['ms_rcnn.evaluation'])
HOOKS = Registry('hook', parent=MMDET_HOOKS, scope='ms_rcnn', locations=['ms_rcnn.engine'])
DATASETS = Registry('dataset', parent=MMDET_DATASETS, scope='ms_rcnn',
                    locations=['ms_rcnn.datasets'])
FUNCTIONS = Registry('function', parent=MMENGINE_FUNCTIONS, scope='ms_rcnn',
                     locations=['ms_rcnn.engine'])
