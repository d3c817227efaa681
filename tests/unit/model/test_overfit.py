"""Every head and objective can drive the loss of one batch to ~0."""

import pytest
import torch

from lmlab.model import Transformer, preset

V = 29


@pytest.mark.parametrize("family, head", [("gpt2", "clm"), ("bert", "mlm"), ("transformer", "seq2seq"),
                                          ("bert", "classification"), ("bert", "span"), ("llama", "clm")])
def test_overfit_one_batch(family, head, figure):
    torch.manual_seed(0)
    model = Transformer(preset(f"{family}-tiny", vocab_size=V, d_model=32, n_heads=2, n_layers=2, d_ff=64,
                               max_seq_len=16, dropout=0.0, attn_dropout=0.0, head=head, n_labels=3))
    ids = torch.randint(1, V, (3, 9))
    kw = {"input_ids": ids}
    if head == "clm":
        kw["labels"] = torch.cat([ids[:, 1:], torch.full((3, 1), -100)], 1)
    elif head == "mlm":
        labels = torch.full_like(ids, -100)
        labels[:, 2::3] = ids[:, 2::3]
        kw["input_ids"] = torch.where(labels != -100, torch.zeros_like(ids), ids)
        kw["labels"] = labels
    elif head == "seq2seq":
        kw["decoder_input_ids"] = torch.cat([torch.zeros(3, 1, dtype=torch.long), ids[:, :-1]], 1)
        kw["labels"] = ids
    elif head == "classification":
        kw["labels"] = torch.tensor([0, 2, 1])
    else:
        kw["labels"] = torch.tensor([[1, 3], [0, 0], [4, 8]])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(150):
        opt.zero_grad()
        loss = model(**kw).loss
        loss.backward()
        opt.step()
    figure(final_loss=loss.item())
    assert loss.item() < 0.05
