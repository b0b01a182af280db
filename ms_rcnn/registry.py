"""ms_rcnn's registries: children of MMDetection's, with scope ``ms_rcnn``.

Our modules keep the paper's names (``MaskIoUHead``, ``MaskScoringRoIHead``,
``MaskScoringRCNN``) without touching mmdet's classes of the same names: configs refer to them
as ``ms_rcnn.<Name>`` (works under ``default_scope='mmdet'``), and anything else is looked up
in mmdet's registries through the parent link.

There is a child for every registry mmdet has, not only for those we add modules to: mmengine
tags what a config inherits from ``ms_rcnn::...`` with ``_scope_='ms_rcnn'`` (pipelines,
schedulers, visualizer, ...), and builds it from the registry of that scope. Without our child
it would fall back to mmengine's root registry, which lacks mmdet's classes or holds others of
the same name (mmcv's ``LoadAnnotations``, which has no ``with_mask``).

Each child imports mmdet's modules for its registry when first searched (mmengine searches
the parents' tables without importing their locations), and ours where we have some.
"""
from typing import List

import mmdet.registry as mmdet_registry
from mmengine.registry import FUNCTIONS as MMENGINE_FUNCTIONS
from mmengine.registry import Registry

SCOPE = 'ms_rcnn'


def child_registry(parent: Registry, locations: List[str]) -> Registry:
    """A registry of scope ``ms_rcnn`` under ``parent``, with the same name."""
    return Registry(parent.name, parent=parent, scope=SCOPE, locations=locations)


RUNNERS = child_registry(mmdet_registry.RUNNERS, ['mmdet.engine.runner'])
RUNNER_CONSTRUCTORS = child_registry(mmdet_registry.RUNNER_CONSTRUCTORS,
                                     ['mmdet.engine.runner'])
LOOPS = child_registry(mmdet_registry.LOOPS, ['mmdet.engine.runner'])
HOOKS = child_registry(mmdet_registry.HOOKS, ['mmdet.engine.hooks', 'ms_rcnn.engine'])

DATASETS = child_registry(mmdet_registry.DATASETS, ['mmdet.datasets', 'ms_rcnn.datasets'])
DATA_SAMPLERS = child_registry(mmdet_registry.DATA_SAMPLERS, ['mmdet.datasets.samplers'])
TRANSFORMS = child_registry(mmdet_registry.TRANSFORMS, ['mmdet.datasets.transforms'])

MODELS = child_registry(mmdet_registry.MODELS, ['mmdet.models', 'ms_rcnn.models'])
MODEL_WRAPPERS = child_registry(mmdet_registry.MODEL_WRAPPERS, ['mmdet.models'])
WEIGHT_INITIALIZERS = child_registry(mmdet_registry.WEIGHT_INITIALIZERS, ['mmdet.models'])
TASK_UTILS = child_registry(mmdet_registry.TASK_UTILS, ['mmdet.models'])

OPTIMIZERS = child_registry(mmdet_registry.OPTIMIZERS, ['mmdet.engine.optimizers'])
OPTIM_WRAPPERS = child_registry(mmdet_registry.OPTIM_WRAPPERS, ['mmdet.engine.optimizers'])
OPTIM_WRAPPER_CONSTRUCTORS = child_registry(mmdet_registry.OPTIM_WRAPPER_CONSTRUCTORS,
                                            ['mmdet.engine.optimizers'])
PARAM_SCHEDULERS = child_registry(mmdet_registry.PARAM_SCHEDULERS, ['mmdet.engine.schedulers'])

METRICS = child_registry(mmdet_registry.METRICS, ['mmdet.evaluation', 'ms_rcnn.evaluation'])
EVALUATOR = child_registry(mmdet_registry.EVALUATOR, ['mmdet.evaluation'])

VISUALIZERS = child_registry(mmdet_registry.VISUALIZERS, ['mmdet.visualization'])
VISBACKENDS = child_registry(mmdet_registry.VISBACKENDS, ['mmdet.visualization'])
LOG_PROCESSORS = child_registry(mmdet_registry.LOG_PROCESSORS, ['mmdet.engine'])

# mmdet has no function registry of its own: ours hangs under mmengine's.
FUNCTIONS = child_registry(MMENGINE_FUNCTIONS, ['ms_rcnn.engine'])
