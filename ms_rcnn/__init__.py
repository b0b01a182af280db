"""Mask Scoring R-CNN for MMDetection 3.x.

Importing the package checks the OpenMMLab versions, allowlists what mmengine's training
checkpoints hold for torch's safe loading, lets configs inherit ours with
``_base_ = 'ms_rcnn::<path>.py'``, and registers the modules (scope ``ms_rcnn``).
"""
from .version import __version__
from .utils.compat import check_versions

check_versions()

from .utils.checkpoint import allow_mmengine_checkpoints  # noqa: E402

allow_mmengine_checkpoints()

from .utils.config import enable_package_config_inheritance  # noqa: E402

enable_package_config_inheritance()

from . import datasets, engine, evaluation, models  # noqa: E402,F401
engine.install_engine_patches()  # atomic checkpoint writes; CPU distributed runs
from .registry import DATASETS, HOOKS, METRICS, MODELS  # noqa: E402,F401

__all__ = ['__version__', 'DATASETS', 'MODELS', 'METRICS', 'HOOKS']
