"""OneDNNLinear: nn.Linear whose fp32 CPU inference runs on oneDNN's matmul."""
import warnings

import pytest
import torch
import torch.nn as nn
from mmdet.models.roi_heads.mask_heads import MaskIoUHead as MMDetMaskIoUHead
from torch.profiler import ProfilerActivity, profile

from ms_rcnn.models import MaskIoUHead
from ms_rcnn.models.onednn_linear import OneDNNLinear, onednn_linear_works

ONEDNN_OP = 'mkldnn::_linear_pointwise'


def ops_called(fn):
    """The names of the operators that ``fn()`` runs on the CPU, and its result."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = fn()
    return {event.key for event in prof.key_averages()}, out


def make_pair(in_features=300, out_features=70, seed=0):
    """A OneDNNLinear and an nn.Linear with the same random weights."""
    torch.manual_seed(seed)
    ours = OneDNNLinear(in_features, out_features)
    ref = nn.Linear(in_features, out_features)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


@pytest.fixture
def needs_onednn():
    if not onednn_linear_works():
        pytest.skip('this torch build has no working mkldnn::_linear_pointwise')


def test_this_torch_build_has_the_op():
    if not torch.backends.mkldnn.is_available():
        pytest.skip('torch built without oneDNN')
    assert onednn_linear_works()


def test_inference_runs_on_onednn_with_the_same_result(needs_onednn):
    ours, ref = make_pair()
    x = torch.randn(100, 300)
    with torch.no_grad():
        ops, out = ops_called(lambda: ours(x))
        expected = ref(x)
    assert ONEDNN_OP in ops
    assert 'aten::linear' not in ops
    assert out.dtype == torch.float32 and out.shape == (100, 70)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_without_bias(needs_onednn):
    torch.manual_seed(1)
    ours = OneDNNLinear(40, 9, bias=False)
    x = torch.randn(7, 40)
    with torch.no_grad():
        ops, out = ops_called(lambda: ours(x))
    assert ONEDNN_OP in ops
    torch.testing.assert_close(out, x @ ours.weight.t(), rtol=1e-5, atol=1e-5)


def test_training_uses_nn_linear_and_gets_the_same_gradients():
    ours, ref = make_pair()
    x = torch.randn(20, 300)
    ops, out = ops_called(lambda: ours(x))
    assert ONEDNN_OP not in ops
    out.square().sum().backward()
    ref(x).square().sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad)
    torch.testing.assert_close(ours.bias.grad, ref.bias.grad)


@pytest.mark.parametrize('case', ['autocast', 'float64', 'mkldnn_off', 'batched_3d'])
def test_other_cases_use_nn_linear(case):
    ours, ref = make_pair()
    x = torch.randn(4, 5, 300) if case == 'batched_3d' else torch.randn(6, 300)
    if case == 'float64':
        ours, ref, x = ours.double(), ref.double(), x.double()
    with torch.no_grad():
        if case == 'autocast':
            with torch.autocast('cpu', dtype=torch.bfloat16):
                ops, out = ops_called(lambda: ours(x))
            assert out.dtype == torch.bfloat16
        elif case == 'mkldnn_off':
            with warnings.catch_warnings():  # the flags warn about TF32 on Intel GPUs
                warnings.simplefilter('ignore', UserWarning)
                with torch.backends.mkldnn.flags(enabled=False):
                    ops, out = ops_called(lambda: ours(x))
        else:
            ops, out = ops_called(lambda: ours(x))
        expected = ref(x)
    assert ONEDNN_OP not in ops
    assert 'aten::linear' in ops
    torch.testing.assert_close(out.to(expected.dtype), expected,
                               **(dict(rtol=2e-2, atol=2e-2) if case == 'autocast' else {}))


def test_head_inference_matches_mmdet_and_keeps_linear_hooks(needs_onednn):
    torch.manual_seed(0)
    theirs = MMDetMaskIoUHead(num_classes=5, in_channels=16, conv_out_channels=16,
                              fc_out_channels=32).eval()
    theirs.init_weights()
    ours = MaskIoUHead(num_classes=5, in_channels=16, conv_out_channels=16,
                       fc_out_channels=32).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    seen = []
    for module in ours.modules():
        if isinstance(module, nn.Linear):  # FLOP counters find the FC layers this way
            module.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    feats, masks = torch.randn(9, 16, 14, 14), torch.randn(9, 28, 28)
    with torch.no_grad():
        ops, out = ops_called(lambda: ours(feats, masks))
        expected = theirs(feats, masks)
    assert ONEDNN_OP in ops
    assert seen == [(9, 32), (9, 32), (9, 5)]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings('ignore:Initializing zero-element tensors')
def test_scripted_and_odd_shaped_layers_behave_as_nn_linear():
    """TorchScript cannot compile the oneDNN path's checks: scripting gets F.linear. A wrong
    input width gets torch's own message, an empty layer torch's own result."""
    torch.manual_seed(0)
    layer = OneDNNLinear(4, 2)
    x = torch.randn(3, 4)
    scripted = torch.jit.script(layer)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), nn.functional.linear(x, layer.weight, layer.bias))
        with pytest.raises(RuntimeError, match=r'mat1 and mat2 shapes cannot be multiplied '
                           r'\(10x63 and 64x32\)'):
            OneDNNLinear(64, 32)(torch.randn(10, 63))
        empty = OneDNNLinear(0, 4)
        torch.testing.assert_close(empty(torch.randn(3, 0)), empty.bias.expand(3, 4))
