"""Let mmengine 0.10's ``pytorch``, ``slurm`` and ``mpi`` launchers run without a GPU (gloo).

Two places in mmengine 0.10.7 assume CUDA when a launcher is used:

- ``mmengine.dist.utils._init_dist_pytorch``, ``_init_dist_slurm`` and ``_init_dist_mpi`` call
  ``torch.cuda.set_device(local_rank)`` before ``init_process_group``: on a CPU build of torch
  that raises ``AttributeError: module 'torch._C' has no attribute '_cuda_setDevice'``
  (``RuntimeError`` on a CUDA build without a GPU);
- ``Runner.wrap_model`` builds ``MMDistributedDataParallel(device_ids=[LOCAL_RANK])``, which
  torch refuses for a module on the CPU (``ValueError: DistributedDataParallel device_ids and
  output_device arguments only work with single-device/multiple-device GPU modules or CPU
  modules``).

:func:`enable_cpu_distributed` (called on ``import ms_rcnn``) changes exactly those failure
cases and nothing else. When no accelerator is available, mmengine's own launcher functions run
with ``torch.cuda.set_device`` made a no-op for the duration of the call (there is no device to
pin; everything else, environment set-up included, is mmengine's code), and with the ``nccl``
backend of mmdet's configs, which needs GPUs, replaced by ``gloo`` (with a warning; set
``env_cfg.dist_cfg.backend='gloo'`` to choose it yourself). ``MMDistributedDataParallel`` drops
``device_ids`` / ``output_device`` for a module whose parameters and buffers are all on the
CPU. With a GPU the original code paths run unchanged.
"""
import contextlib
import functools
import warnings

import torch


def _has_accelerator() -> bool:
    from mmengine.device import is_mlu_available, is_musa_available, is_npu_available
    return (torch.cuda.is_available() or is_mlu_available() or is_npu_available()
            or is_musa_available())


def _on_cpu(module: torch.nn.Module) -> bool:
    tensors = list(module.parameters()) + list(module.buffers())
    return bool(tensors) and all(t.device.type == 'cpu' for t in tensors)


@contextlib.contextmanager
def _no_cuda_set_device():
    original = torch.cuda.set_device
    torch.cuda.set_device = lambda device: None
    try:
        yield
    finally:
        torch.cuda.set_device = original


def cpu_backend(backend: str) -> str:
    """The process-group backend to use without an accelerator: gloo for nccl, else as given."""
    if backend != 'nccl':
        return backend
    warnings.warn('no GPU: the distributed backend is gloo instead of nccl (set '
                  "env_cfg.dist_cfg.backend='gloo' to choose it yourself)", stacklevel=3)
    return 'gloo'


def _cpu_aware(init_fn):
    if getattr(init_fn, '_ms_rcnn_cpu_aware', False):
        return init_fn

    @functools.wraps(init_fn)
    def wrapper(backend, *args, **kwargs):
        if _has_accelerator():
            return init_fn(backend, *args, **kwargs)
        with _no_cuda_set_device():
            return init_fn(cpu_backend(backend), *args, **kwargs)

    wrapper._ms_rcnn_cpu_aware = True
    return wrapper


def enable_cpu_distributed() -> None:
    """Remove the CUDA assumptions of mmengine's launchers and DDP wrapper (see module doc).

    Idempotent.
    """
    from mmengine.dist import utils as dist_utils
    from mmengine.model.wrappers import distributed as wrappers

    dist_utils._init_dist_pytorch = _cpu_aware(dist_utils._init_dist_pytorch)
    dist_utils._init_dist_slurm = _cpu_aware(dist_utils._init_dist_slurm)
    dist_utils._init_dist_mpi = _cpu_aware(dist_utils._init_dist_mpi)

    ddp_cls = wrappers.MMDistributedDataParallel
    ddp_init = ddp_cls.__init__
    if not getattr(ddp_init, '_ms_rcnn_cpu_aware', False):

        @functools.wraps(ddp_init)
        def __init__(self, module, *args, **kwargs):
            if kwargs.get('device_ids') and _on_cpu(module):
                kwargs['device_ids'] = None
                kwargs.pop('output_device', None)
            ddp_init(self, module, *args, **kwargs)

        __init__._ms_rcnn_cpu_aware = True
        ddp_cls.__init__ = __init__
