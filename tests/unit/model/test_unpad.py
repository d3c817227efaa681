"""The padding-free encoder path (unpad.py) against the padded reference (``unpad=False``): the
same losses, outputs at every real position and gradients of every parameter, in float32 and
under bf16 autocast, for each head an encoder carries and for an encoder–decoder's encoder."""

import pytest
import torch

from lmlab.model import Transformer, TransformerConfig, preset
from lmlab.model.loss import IGNORE_INDEX
from lmlab.model import unpad
from lmlab.model.unpad import Unpadding
from lmlab.train.objectives import MaskedLM

V = 99
LENGTHS = [7, 1, 4]  # batch 3, seq 7: a full row, a row of one token, one between

# bert: learned positions, segments, post-norm, GELU; "rope": every switch of the other stacks
# (rotary positions, RMSNorm, pre-norm, SwiGLU, grouped-query attention, QK-norm, no biases)
CONFIGS = {
    "bert-classification": lambda: preset("bert-tiny", head="classification", n_labels=3, **SMALL),
    "bert-mlm": lambda: preset("bert-tiny", head="mlm", **SMALL),
    "bert-span": lambda: preset("bert-tiny", head="span", **SMALL),
    "rope-encoder": lambda: TransformerConfig(arch="encoder", head="classification", position="rope", norm="rmsnorm",
                                              norm_position="pre", activation="swiglu", n_kv_heads=1, qk_norm=True,
                                              bias=False, n_labels=3, **SMALL),
    "transformer": lambda: preset("transformer-tiny", **SMALL),
}
SMALL = dict(vocab_size=V, d_model=36, n_heads=3, n_layers=2, d_ff=44, max_seq_len=16, dropout=0.0, attn_dropout=0.0)


def padding_mask(lengths=LENGTHS, t=7, left=False) -> torch.Tensor:
    columns = torch.arange(t)[None, :]  # [1, T]
    n = torch.tensor(lengths)[:, None]  # [B, 1]
    return (columns >= t - n if left else columns < n).long()


def inputs(cfg: TransformerConfig, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Model inputs with labels for `cfg`'s head; pad id 0 at padding."""
    g = torch.Generator().manual_seed(1)
    b, t = mask.shape
    ids = torch.randint(1, V, (b, t), generator=g) * mask
    out = {"input_ids": ids, "attention_mask": mask}
    if cfg.type_vocab_size:
        out["token_type_ids"] = (torch.arange(t) >= 3).long().expand(b, t) * mask
    if cfg.head == "classification":
        out["labels"] = torch.tensor([0, 2, 1])
    elif cfg.head == "mlm":
        out["labels"] = torch.where(mask.bool() & (torch.rand(b, t, generator=g) < 0.5), ids, IGNORE_INDEX)
        out["labels"][1, mask[1].argmax()] = ids[1, mask[1].argmax()]  # the length-1 row is scored too
    elif cfg.head == "span":
        first = mask.argmax(1)
        out["labels"] = torch.stack([first, first + mask.sum(1) - 1], 1)  # [B, 2]
    else:  # seq2seq: targets of another length, padded
        out["decoder_input_ids"] = torch.randint(1, V, (b, 5), generator=g)
        out["decoder_attention_mask"] = padding_mask([5, 2, 3], 5)
        out["labels"] = torch.where(out["decoder_attention_mask"].bool(), torch.randint(1, V, (b, 5), generator=g),
                                    IGNORE_INDEX)
    return out


def pair(cfg: TransformerConfig) -> tuple[Transformer, Transformer]:
    torch.manual_seed(0)
    unpadded = Transformer(cfg.replace(unpad=True)).train()
    padded = Transformer(cfg.replace(unpad=False)).train()
    padded.load_state_dict(unpadded.state_dict())
    return unpadded, padded


def step(model: Transformer, kw: dict, bf16: bool):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(**kw)
        with torch.no_grad():
            without_labels = model(**{k: v for k, v in kw.items() if k != "labels"})
    out.loss.backward()
    return out.loss.detach(), without_labels, {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


# A classifier reads position 0, which left padding makes padding: unspecified on both paths.
CASES = [(name, left) for name, cfg in CONFIGS.items() for left in (False, True)
         if not (left and cfg().head == "classification")]


@pytest.fixture(params=[1, 8], ids=["exact", "rounded"])
def rows_multiple(request, monkeypatch):
    """N as it is (12 tokens of 21 positions), or rounded up to 16 with 4 padding rows."""
    monkeypatch.setattr(unpad, "ROWS_MULTIPLE", request.param)
    return request.param


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name,left", CASES, ids=[f"{n}-{'left' if lp else 'right'}-padded" for n, lp in CASES])
def test_unpadded_equals_padded_in_outputs_and_gradients(name, left, bf16, rows_multiple, figure):
    cfg = CONFIGS[name]()
    unpadded, padded = pair(cfg)
    mask = padding_mask(left=left)
    kw = inputs(cfg, mask)
    loss_u, out_u, grads_u = step(unpadded, kw, bf16)
    loss_p, out_p, grads_p = step(padded, kw, bf16)
    assert grads_u.keys() == grads_p.keys() and len(grads_u) > 10
    real = mask.bool()
    pairs = {"loss": (loss_u, loss_p)}
    if cfg.arch == "encoder":
        pairs["hidden"] = (out_u.hidden_states[real], out_p.hidden_states[real])
    if cfg.head == "span":
        pairs["logits"] = (out_u.logits[real], out_p.logits[real])
    elif cfg.head in ("classification", "seq2seq"):
        pairs["logits"] = (out_u.logits, out_p.logits)
    if cfg.pooler and not left:
        pairs["pooled"] = (out_u.pooled, out_p.pooled)
    # float32: the same sums in another order; bf16: the same roundings, up to that order
    tol = 1e-2 if bf16 else 1e-6
    scale = max(g.abs().max() for g in grads_p.values())  # some gradients are 0 in exact arithmetic (key biases)
    worst_grad = max((grads_u[n] - grads_p[n]).abs().max() for n in grads_p) / scale
    figure(max_grad_diff_of_largest=worst_grad.item(),
           **{f"max_{k}_diff": (a.float() - b.float()).abs().max() for k, (a, b) in pairs.items()})
    for k, (a, b) in pairs.items():
        torch.testing.assert_close(a.float(), b.float(), atol=tol, rtol=tol, msg=f"{name}: {k}")
    for n in grads_p:
        torch.testing.assert_close(grads_u[n], grads_p[n], atol=tol * scale, rtol=tol, msg=f"{name}: {n}")


def test_masked_lm_objective_gives_the_same_loss_and_gradients(rows_multiple):
    cfg = CONFIGS["bert-mlm"]()
    unpadded, padded = pair(cfg)
    mask = padding_mask()
    ids = torch.randint(5, V, mask.shape) * mask
    objective = MaskedLM(V, mask_id=4, special_ids=[0, 1, 2, 3, 4], seed=0, prob=0.4)
    prepared = objective.prepare({"input_ids": ids, "attention_mask": mask}, index=3)
    assert prepared.n_targets > 0
    loss_u, _, grads_u = step(unpadded, prepared.inputs, bf16=False)
    loss_p, _, grads_p = step(padded, prepared.inputs, bf16=False)
    torch.testing.assert_close(loss_u, loss_p, atol=1e-6, rtol=1e-6)
    for n in grads_p:
        torch.testing.assert_close(grads_u[n], grads_p[n], atol=1e-6, rtol=1e-5, msg=n)


def test_without_padding_both_paths_are_one():
    """A batch with no padding runs the padded formulas (nothing to skip)."""
    cfg = CONFIGS["bert-classification"]()
    unpadded, padded = pair(cfg)
    ids = torch.randint(1, V, (3, 7))
    with torch.no_grad():
        a = unpadded.eval()(ids, attention_mask=torch.ones_like(ids)).hidden_states
        b = padded.eval()(ids).hidden_states
    assert torch.equal(a, b)


def test_attention_weights_and_generation_memory_match(rows_multiple):
    cfg = CONFIGS["transformer"]()
    unpadded, padded = pair(cfg)
    mask = padding_mask()
    ids = torch.randint(1, V, mask.shape) * mask
    with torch.no_grad():
        mem_u, attn_u = unpadded.eval().encode(ids, mask, need_weights=True)
        mem_p, attn_p = padded.eval().encode(ids, mask, need_weights=True)
    real = mask.bool()
    torch.testing.assert_close(mem_u[real], mem_p[real], atol=1e-5, rtol=1e-5)
    for a, b in zip(attn_u, attn_p):  # [B, H, T, S], at real queries
        torch.testing.assert_close(a["self"].transpose(1, 2)[real], b["self"].transpose(1, 2)[real])


def test_unpadding_index_helpers():
    mask = padding_mask([3, 1, 2], 3, left=True)  # [[1 1 1], [0 0 1], [0 1 1]]
    u = Unpadding.from_mask(mask, multiple=1)
    assert u.indices.tolist() == [0, 1, 2, 5, 7, 8]
    x = torch.arange(9.0).view(3, 3, 1).requires_grad_()
    rows = u.unpad(x)
    assert rows.squeeze(1).tolist() == [0, 1, 2, 5, 7, 8]
    back = u.pad(rows * 2)
    assert back.squeeze(2).tolist() == [[0, 2, 4], [0, 0, 10], [0, 14, 16]]
    back.sum().backward()
    assert x.grad.squeeze(2).tolist() == mask.mul(2).tolist()
    assert torch.autograd.gradcheck(lambda t: u.pad(u.unpad(t) ** 2), (torch.randn(3, 3, 2, dtype=torch.double,
                                                                                    requires_grad=True),))


def test_rows_are_rounded_up_with_padding_positions_where_there_are_enough():
    mask = padding_mask([3, 1, 2], 3, left=True)  # 6 tokens, 3 padding positions (3 and 4, 6)
    assert Unpadding.from_mask(mask, multiple=4).indices.tolist() == [0, 1, 2, 3, 4, 5, 7, 8]  # 6 → 8
    assert Unpadding.from_mask(mask, multiple=64).indices.tolist() == list(range(9))  # all there is
    assert Unpadding.from_mask(mask, multiple=3).indices.tolist() == [0, 1, 2, 5, 7, 8]  # already a multiple
