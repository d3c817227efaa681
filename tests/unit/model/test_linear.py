"""The few-row fast path of `linear` against `F.linear` (the oracle)."""

import pytest
import torch
import torch.nn.functional as F

from lmlab.model.linear import FEW_ROWS, Linear, linear


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("shape", [(1, 1, 36), (3, 1, 36), (5, 36), (3, 7, 36)])
@pytest.mark.parametrize("bias", [True, False])
def test_equals_f_linear(shape, bias, two_threads, figure):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(98, 36, generator=g)  # 98 = 2 · 49 output rows: split in two blocks
    b = torch.randn(98, generator=g) if bias else None
    x = torch.randn(*shape, generator=g)
    with torch.no_grad():
        got, want = linear(x, w, b), F.linear(x, w, b)
    assert got.shape == want.shape == (*shape[:-1], 98)
    diff = (got - want).abs().max().item()
    figure(max_diff=diff)
    assert diff <= 1e-5


def test_falls_back_where_the_split_does_not_apply(two_threads):
    w, x = torch.randn(99, 36), torch.randn(3, 36)  # 99 rows: not divisible by 2 threads
    with torch.no_grad():
        assert torch.equal(linear(x, w), F.linear(x, w))
    big = torch.randn(FEW_ROWS + 1, 36)
    w2 = torch.randn(98, 36)
    with torch.no_grad():
        assert torch.equal(linear(big, w2), F.linear(big, w2))
    x.requires_grad_(True)  # autograd on: the plain path, gradients as usual
    linear(x, w2).sum().backward()
    assert torch.allclose(x.grad, w2.sum(0).expand(3, 36))


def test_module_keeps_nn_linear_state_dict():
    m = Linear(36, 98)
    assert isinstance(m, torch.nn.Linear)
    assert set(m.state_dict()) == {"weight", "bias"}
