"""The few-row fast path of `linear` against `F.linear` (the oracle)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from lmlab import machine
from lmlab.model.linear import FEW_ROWS, Linear, PackedWeights, bucket_length, linear


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


needs_bf16_kernel = pytest.mark.skipif(torch.bfloat16 not in machine.detect().packed_dtypes,
                                       reason="no native bf16 oneDNN on this CPU")


@needs_bf16_kernel
@pytest.mark.parametrize("shape", [(1, 1, 36), (3, 1, 36), (7, 36)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_bf16_is_bit_identical_to_f_linear(shape, bias):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(99, 36, generator=g).bfloat16()
    b = torch.randn(99, generator=g).bfloat16() if bias else None
    x = torch.randn(*shape, generator=g).bfloat16()
    pack = PackedWeights()
    with torch.no_grad(), pack:
        got = linear(x, w, b)
        again = linear(x, w, b)  # the second call reuses the packed copy
    assert len(pack._packed) == 1
    want = F.linear(x, w, b)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    assert torch.equal(got, want) and torch.equal(again, want)


@pytest.fixture(params=["GenuineIntel", "AuthenticAMD"])
def vendor(request, monkeypatch):
    """The machine as an Intel (float32 through MKL on W) or an AMD CPU (oneDNN's packed float32)."""
    m = dataclasses.replace(machine.detect(), vendor=request.param)
    monkeypatch.setattr(machine, "detect", lambda: m)
    return m


@pytest.mark.parametrize("shape", [(1, 1, 36), (3, 1, 36), (7, 36)])
@pytest.mark.parametrize("bias", [True, False])
def test_float32_goes_through_blas_on_intel_and_onednn_elsewhere(shape, bias, vendor, figure):
    g = torch.Generator().manual_seed(0)
    w, x = torch.randn(99, 36, generator=g), torch.randn(*shape, generator=g)
    b = torch.randn(99, generator=g) if bias else None
    pack = PackedWeights()
    with torch.no_grad(), pack:
        got = linear(x, w, b)
        again = linear(x, w, b)  # the second call reuses the packed copy, if any
    if vendor.blas_float32:
        assert not pack._packed  # MKL multiplies W itself: nothing to keep
    else:
        assert len(pack._packed) == 1 and (pack._packed[id(w)][1] is not None) is vendor.mkldnn
    diff = (got - F.linear(x, w, b)).abs().max().item()
    figure(max_diff=diff)
    assert got.shape == (*shape[:-1], 99) and diff <= 1e-5 and torch.equal(got, again)


@needs_bf16_kernel
def test_pack_is_active_only_inside_its_block_and_not_for_training():
    w, x = torch.randn(98, 36).bfloat16(), torch.randn(3, 36).bfloat16()
    pack = PackedWeights()
    with torch.no_grad():
        linear(x, w)
        assert not pack._packed  # not active
        with pack:
            linear(torch.randn(FEW_ROWS + 1, 36).bfloat16(), w)  # many rows: F.linear's own route
            assert not pack._packed
    with pack:
        x.requires_grad_(True)
        linear(x, w).float().sum().backward()  # autograd: the plain path
        assert not pack._packed and x.grad is not None


@needs_bf16_kernel
def test_a_weight_onednn_refuses_keeps_f_linear(monkeypatch):
    def refuse(weight, *args):
        raise RuntimeError("oneDNN: unsupported")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuse)
    w, x = torch.randn(99, 36).bfloat16(), torch.randn(3, 36).bfloat16()
    pack = PackedWeights()
    with torch.no_grad(), pack:
        got = linear(x, w)
        again = linear(x, w)  # remembered as unpackable: not retried
    assert torch.equal(got, F.linear(x, w)) and torch.equal(got, again)
    assert pack._packed[id(w)][1] is None


def test_bf16_weights_are_not_packed_where_bf16_is_emulated():
    """On an AVX2 (or AVX-512 without bf16) CPU oneDNN would emulate bf16: those weights keep
    F.linear; float32 ones are packed only where MKL does not take them."""
    w16, x16 = torch.randn(99, 36).bfloat16(), torch.randn(3, 36).bfloat16()
    w32, x32 = torch.randn(99, 36), torch.randn(3, 36)
    for kind in ("avx2", "avx512"):
        pack = PackedWeights()
        with machine.force(kind), torch.no_grad(), pack:
            assert torch.equal(linear(x16, w16), F.linear(x16, w16))
            linear(x32, w32)
        assert pack._packed[id(w16)][1] is None
        assert (id(w32) in pack._packed) is not machine.detect().blas_float32


def test_bucket_lengths_are_few_and_cover_every_length():
    assert [bucket_length(n) for n in range(1, 18)] == [1, 2, 3, 4, 6, 6, 8, 8, 12, 12, 12, 12, 16, 16, 16, 16, 24]
    lengths = {bucket_length(n) for n in range(1, 2049)}
    assert len(lengths) == 2 + 2 * 10 and max(lengths) == 2048  # 1, 2, then two per octave up to 2^11
    assert all(n <= bucket_length(n) < 1.5 * n + 1 for n in range(1, 5000))  # at most half again
    assert bucket_length(200, 256) == 256 and bucket_length(300, 256) == 300  # capped, never below n


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_bucketing_pack_runs_half_products_of_any_row_count_on_few_shapes(dtype, monkeypatch, figure):
    """A server's pack (bucket_rows) pads a half-precision product of many rows to a bucket row
    count: what oneDNN builds a kernel for is a few shapes, and the rows are F.linear's."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(99, 36, generator=g).to(dtype), torch.randn(99, generator=g).to(dtype)
    xs = [torch.randn(n // 7 + 1, n, 36, generator=g).to(dtype)[:, :n % 7 + 3] for n in range(3, 150)]
    seen, original = [], F.linear
    monkeypatch.setattr(F, "linear", lambda x, *a: seen.append(x.numel() // x.size(-1)) or original(x, *a))
    pack, worst = PackedWeights(bucket_rows=True), 0.0
    for x in xs:  # [B, T, 36], B 1..22, T 3..9, not contiguous
        with torch.no_grad(), pack:
            got = linear(x, w, b)
        want = original(x, w, b)
        assert got.shape == want.shape and got.dtype == dtype
        # the same products, summed in another order than F.linear's own strided route may take
        worst = max(worst, ((got.float() - want.float()).abs().max() / want.float().abs().max()).item())
    figure(max_diff_over_max_output=worst)
    assert worst <= torch.finfo(dtype).eps  # one rounding of the largest output, at most
    rows = {x.numel() // 36 for x in xs if x.numel() > FEW_ROWS * 36}
    many = {n for n in seen if n > FEW_ROWS}  # the products of few rows take their own routes
    assert len(rows) > 60 and many <= {bucket_length(n) for n in rows} and len(many) <= 10
    seen.clear()
    with torch.no_grad(), PackedWeights(bucket_rows=True):  # float32 goes to BLAS as it is
        linear(xs[-1].float(), w.float(), b.float())
    with PackedWeights(bucket_rows=True):  # and so does training
        linear(xs[-1], w, b)
    with torch.no_grad(), PackedWeights():  # and a pack that does not bucket
        linear(xs[-1], w, b)
    assert seen == [xs[-1].numel() // 36] * 3
