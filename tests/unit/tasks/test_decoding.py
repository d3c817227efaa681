"""Greedy and beam search on the KV cache against recomputation and exhaustive search."""

import itertools
import math

import pytest
import torch

from lmlab.model import Transformer, preset
from lmlab.tasks.decoding import generate_ids

V, BOS, EOS = 7, 0, 1


def _model(seed=0):
    torch.manual_seed(seed)
    return Transformer(preset("transformer-tiny", vocab_size=V, d_model=16, n_heads=2, n_layers=1, d_ff=24,
                              max_seq_len=16, dropout=0.0, pad_token_id=2)).eval()


def _logp(model, src, prefix):
    with torch.no_grad():
        out = model(src, decoder_input_ids=torch.tensor([[BOS] + prefix]))
    return torch.log_softmax(out.logits[0, -1].float(), -1)


def _src():
    return torch.tensor([[3, 4, 5, 6, 3]]), torch.ones(1, 5, dtype=torch.long)


def test_greedy_with_cache_equals_recomputation():
    model = _model()
    src, mask = _src()
    got = generate_ids(model, src, mask, BOS, EOS, max_new_tokens=6)[0]
    want = []
    for _ in range(6):
        nxt = int(_logp(model, src, want).argmax())
        if nxt == EOS:
            break
        want.append(nxt)
    assert got == want


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_wide_beam_is_exhaustive_search(penalty):
    model = _model(seed=3)
    src, mask = _src()
    L = 3
    best, best_seq = -math.inf, None
    for n in range(0, L + 1):
        for seq in itertools.product([t for t in range(V) if t != EOS], repeat=n):
            seq = list(seq)
            total = sum(float(_logp(model, src, seq[:i])[seq[i]]) for i in range(n))
            if n < L:  # finished: EOS follows
                total += float(_logp(model, src, seq)[EOS])
                score = total / (n + 1) ** penalty
            else:  # cut at the length limit
                score = total / L ** penalty
            if score > best:
                best, best_seq = score, seq
    got = generate_ids(model, src, mask, BOS, EOS, max_new_tokens=L, num_beams=V ** L, length_penalty=penalty)[0]
    assert got == best_seq


def test_batched_beams_equal_one_by_one():
    model = _model(seed=5)
    src = torch.tensor([[3, 4, 5, 2], [6, 6, 3, 4]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    both = generate_ids(model, src, mask, BOS, EOS, max_new_tokens=5, num_beams=3)
    one = [generate_ids(model, src[i:i + 1, :int(mask[i].sum())], mask[i:i + 1, :int(mask[i].sum())], BOS, EOS,
                        max_new_tokens=5, num_beams=3)[0] for i in range(2)]
    assert both == one
