"""ChannelwiseTensorProduct equals the e3nn TensorProduct it replaces: outputs and gradients
(float64 to round-off), for the MACE interaction blocks of several hidden irreps, and the
radial MLP's reordered weights are a pure column permutation."""

import pytest
import torch

from mlff.models.base import default_dtype as _default_dtype
from mlff.nn.channelwise_tp import ChannelwiseTensorProduct
from mlff.nn.linear import GroupedMLP


@pytest.mark.parametrize("max_L,max_ell", [(1, 3), (2, 2), (0, 3)])
def test_matches_e3nn_values_and_gradients(max_L, max_ell, small_potential):
    model = small_potential(elements=(1, 8), max_L=max_L, max_ell=max_ell).model
    torch.manual_seed(0)
    for block in model.interactions:
        tp = block.conv_tp
        fast = block.tp
        e = 37
        x = torch.randn(e, tp.irreps_in1.dim, dtype=torch.float64, requires_grad=True)
        y = torch.randn(e, tp.irreps_in2.dim, dtype=torch.float64, requires_grad=True)
        w = torch.randn(e, tp.weight_numel, dtype=torch.float64, requires_grad=True)
        ref = tp(x, y, w)
        out = fast(x, y, w)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(ref)
        for a, b in zip(torch.autograd.grad(out, (x, y, w), g), torch.autograd.grad(ref, (x, y, w), g)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        # the grouped path with weights in weight_order() and the pieces summed like a scatter
        groups = fast.forward_groups(x, y, w.index_select(1, fast.weight_order()))
        summed = fast.to_e3nn_order([t.sum(0, keepdim=True) for t in groups])
        torch.testing.assert_close(summed, ref.sum(0, keepdim=True), rtol=1e-12, atol=1e-12)


def test_float32_and_scripting(small_potential):
    model = small_potential(elements=(1, 6), channels=4, dtype="float32").model
    tp = model.interactions[1].conv_tp
    with _default_dtype(torch.float32):
        fast = ChannelwiseTensorProduct(tp)
    scripted = torch.jit.script(fast)
    x, y, w = torch.randn(5, tp.irreps_in1.dim), torch.randn(5, tp.irreps_in2.dim), torch.randn(5, tp.weight_numel)
    torch.testing.assert_close(scripted(x, y, w), tp(x, y, w), rtol=1e-5, atol=1e-5)
    assert not any("tp." in k and "conv_tp" not in k for k in model.state_dict())  # nothing saved


def test_rejects_products_it_does_not_implement():
    from e3nn import o3

    full = o3.FullyConnectedTensorProduct("2x0e+2x1o", "1x0e+1x1o", "2x0e+2x1o", shared_weights=False)
    with pytest.raises(ValueError, match="uvu"):
        ChannelwiseTensorProduct(full)
    shared = o3.TensorProduct("2x0e", "1x0e", "2x0e", [(0, 0, 0, "uvu", True)])
    with pytest.raises(ValueError, match="per-edge weights"):
        ChannelwiseTensorProduct(shared)


def test_mlp_output_order_is_a_column_permutation():
    torch.manual_seed(1)
    mlp = GroupedMLP([4, 8, 6], members=2)
    x = torch.randn(2, 5, 4)
    plain = mlp(x)
    order = torch.tensor([3, 0, 5, 1, 4, 2])
    mlp.set_output_order(order)
    torch.testing.assert_close(mlp(x), plain[:, :, order])
    with pytest.raises(ValueError, match="permutation"):
        mlp.set_output_order(torch.tensor([0, 0, 1, 2, 3, 4]))
