"""A ``nn.Linear`` whose fp32 CPU inference runs on oneDNN's matmul instead of the BLAS sgemm."""
import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


@functools.lru_cache(maxsize=None)
def onednn_linear_works() -> bool:
    """Whether this torch build has oneDNN's fused linear op and it matches ``F.linear``.

    Checked once per process on a tiny input; any failure (the op missing or renamed in this
    torch, oneDNN not built in) means False.
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(shape, generator=gen) for shape in ((3, 8), (5, 8), (5, )))
        out = torch.ops.mkldnn._linear_pointwise(x, w, b, 'none', [], '')
        return bool(torch.allclose(out, F.linear(x, w, b), rtol=1e-5, atol=1e-5))
    except (AttributeError, RuntimeError, TypeError):
        return False


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled('cpu')
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _compiling() -> bool:
    is_compiling = getattr(getattr(torch, 'compiler', None), 'is_compiling', None)  # torch >= 2.3
    return bool(is_compiling()) if is_compiling is not None else False


def tracing_or_compiling() -> bool:
    """Whether this call is being traced, scripted, exported to ONNX or compiled: the graph
    then records what runs, so layers should run plain, device- and dtype-neutral ops."""
    return (torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.onnx.is_in_onnx_export() or _compiling())


def use_onednn_linear(x: Tensor, weight: Tensor) -> bool:
    """Whether ``x @ weight.T`` should run on oneDNN: fp32 CPU inference outside autocast,
    tracing, export and ``torch.compile``, with oneDNN enabled (``torch.backends.mkldnn``)."""
    return (x.device.type == 'cpu' and x.dtype == torch.float32
            and weight.dtype == torch.float32 and x.dim() == 2
            and not torch.is_grad_enabled()
            and not _cpu_autocast_enabled()
            and torch.backends.mkldnn.enabled
            and not tracing_or_compiling()
            and x.shape[1] == weight.shape[1] > 0 and weight.shape[0] > 0  # else F.linear's
            # own result or error message (an empty layer, a wrong input width)
            and onednn_linear_works())


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` that computes fp32 CPU inference with oneDNN's matmul.

    torch sends fp32 ``F.linear`` on the CPU to the BLAS (MKL) sgemm, which on some CPUs is
    far from the cores' peak: on an AMD Zen 5 the MaskIoU head's first FC layer (100 x 12544
    by 12544 x 1024) takes 17 ms in MKL and 6 ms in oneDNN, the library torch already uses for
    convolutions (docs/benchmarks.md). Everywhere else (autograd, autocast, other dtypes and
    devices, tracing, export, compile) this is ``nn.Linear``. Parameters, their names and
    module hooks are those of ``nn.Linear``; results agree to float rounding.
    """

    def forward(self, input: Tensor) -> Tensor:
        if torch.jit.is_scripting():  # TorchScript compiles only this line
            return F.linear(input, self.weight, self.bias)
        return self._eager_forward(input)

    @torch.jit.unused
    def _eager_forward(self, input: Tensor) -> Tensor:
        if use_onednn_linear(input, self.weight):
            return torch.ops.mkldnn._linear_pointwise(input, self.weight, self.bias, 'none',
                                                     [], '')
        return F.linear(input, self.weight, self.bias)
