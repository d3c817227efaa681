"""ELECTRA's loss written out by hand; the generator's samples follow its softmax; a sample
that equals the original counts as original."""

import torch
import torch.nn.functional as F

from lmlab.model import Transformer, preset
from lmlab.model.electra import Electra
from lmlab.model.loss import IGNORE_INDEX

V, B, T = 99, 3, 7


def electra(**kw) -> Electra:
    cfg = preset("bert-tiny", vocab_size=V, d_model=36, n_heads=3, n_layers=2, d_ff=44, max_seq_len=64,
                 dropout=0.0, attn_dropout=0.0, head="none")
    torch.manual_seed(0)
    return Electra(Transformer(cfg), **kw).eval()


def masked_batch(b=B, t=T, seed=1):
    g = torch.Generator().manual_seed(seed)
    original = torch.randint(5, V, (b, t), generator=g)
    attention = torch.ones(b, t, dtype=torch.long)
    attention[0, -2:] = 0  # padding gets neither a label nor a loss term
    masked = (torch.rand(b, t, generator=g) < 0.4) & attention.bool()
    masked[1, 2] = True
    ids = torch.where(masked, torch.full_like(original, 4), original)  # 4 = [MASK]
    labels = torch.where(masked, original, torch.full_like(original, IGNORE_INDEX))
    return ids, attention, labels, torch.rand(b, t, generator=g)


def test_loss_is_mlm_of_the_generator_plus_weighted_detection_of_replaced_tokens(figure):
    model = electra(generator_layers=1, rtd_weight=7.0)
    ids, attention, labels, u = masked_batch()
    with torch.no_grad():
        got = model(ids, attention, labels, u)
        # by hand: the generator reads the discriminator's embeddings
        disc = model.discriminator
        x = disc.embed(ids, torch.arange(T))
        pad = attention.bool()[:, None, None, :]
        h, _ = model.generator(x, self_mask=pad)
        head = model.generator_head
        logits = F.linear(head.norm(F.gelu(head.dense(h))), disc.embed.tokens.weight, head.proj.bias)  # [B, T, V]
        mlm = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=IGNORE_INDEX)
        corrupted = ids.clone()
        for b in range(B):
            for t in range(T):
                if labels[b, t] != IGNORE_INDEX:  # inverse CDF, one token at a time
                    p = torch.softmax(logits[b, t].double(), -1)
                    corrupted[b, t] = int((p.cumsum(0) < u[b, t] * p.sum()).sum())
        original = torch.where(labels != IGNORE_INDEX, labels, ids)
        target = (corrupted != original).double()
        d = model.detector(disc(corrupted, attention).hidden_states).squeeze(-1).double()
        real = attention.bool()
        bce = -(target * F.logsigmoid(d) + (1 - target) * F.logsigmoid(-d))[real].mean()
        want = mlm + 7.0 * bce
    figure(loss=got.loss, by_hand=want, replaced=int(target[real].sum()))
    assert 0 < target[real].sum() < real.sum()  # both kinds of token occur
    assert torch.allclose(got.loss.double(), want, atol=1e-5)
    assert torch.allclose(got.logits.double(), d, atol=1e-5)


def test_samples_follow_the_generators_softmax(figure):
    model = electra()
    n = 4000
    ids = torch.randint(5, V, (1, T), generator=torch.Generator().manual_seed(1)).repeat(n, 1)
    attention = torch.ones(n, T, dtype=torch.long)
    labels = torch.full((n, T), IGNORE_INDEX)
    labels[:, 3], ids[:, 3] = 17, 4  # one masked position, the same in every row
    u = torch.rand(n, T, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():  # a peaked distribution, so that a uniform draw could not pass
        model.generator_head.proj.bias.copy_(2.0 * torch.randn(V, generator=torch.Generator().manual_seed(3)))
    seen = []

    def keep(module, args, kwargs, out):  # the discriminator's input: the corrupted ids
        seen.append(args[0][:, 3].clone())

    hook = model.discriminator.register_forward_hook(keep, with_kwargs=True)
    with torch.no_grad():
        model(ids, attention, labels, u)
        x = model.discriminator.embed(ids[:1], torch.arange(T))
        h, _ = model.generator(x)
        p = torch.softmax(model.generator_head(h[0, 3], model.discriminator.embed.tokens.weight), -1)
    hook.remove()
    freq = torch.bincount(seen[0], minlength=V).double() / n
    err = (freq - p.double()).abs().max()
    figure(max_frequency_error=err, top_probability=p.max())
    assert p.max() > 0.1 and err < 0.03


def test_a_sample_equal_to_the_original_is_not_replaced():
    model = electra()
    ids, attention, labels, u = masked_batch()
    with torch.no_grad():
        bias = model.generator_head.proj.bias
        bias.zero_()
        bias[labels[1, 2]] = 1e4  # the generator all but surely restores this token
        model(ids, attention, labels, u)
        bias[labels[1, 2]] = 0.0
        bias[3] = 1e4  # and here it never does (3 is never a label)
        model(ids, attention, labels, u)
    terms = model.evaluation_terms()
    n_masked = int((labels != IGNORE_INDEX).sum())
    only_one_restored = (n_masked - int((labels == labels[1, 2]).sum())) / attention.sum().item()
    assert abs(terms["val_replaced_fraction"] - (only_one_restored + n_masked / attention.sum().item()) / 2) < 1e-6
    assert model.evaluation_terms() == {}  # reset after reading
