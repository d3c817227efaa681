"""train.adversarial: the perturbation against Miyato et al.'s formula, and the loop's gradient
against L(e) + L(e + r) computed here with autograd, step by step."""

import copy

import pytest
import torch

from lmlab.errors import ConfigError
from lmlab.model.ngram import NgramClassifier, NgramConfig
from lmlab.train.adversarial import adversarial, embedding_module, perturbation
from lmlab.train.loop import TrainConfig

from .helpers import RandomTokens, make_trainer, tiny_model


def test_perturbation_has_norm_eps_token_norms_per_example_along_the_gradient():
    gen = torch.Generator().manual_seed(0)
    e, g = torch.randn(3, 7, 5, generator=gen) * 2.5, torch.randn(3, 7, 5, generator=gen)
    g[1] *= 1e-3  # a nearly flat example gets as large a step as any other
    r = perturbation(e, g, 0.3)
    token_norm = (e.norm(dim=-1) ** 2).mean().sqrt()
    for b in range(3):
        assert r[b].norm() == pytest.approx(0.3 * token_norm.item(), rel=1e-5)
        cos = torch.nn.functional.cosine_similarity(r[b].flatten(), g[b].flatten(), dim=0)
        assert cos.item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(perturbation(e, torch.zeros_like(g), 0.3), torch.zeros_like(g))  # no NaN


def test_the_step_learns_the_clean_and_the_perturbed_batch(tmp_path):
    eps = 0.3
    model = tiny_model(dropout=0.0)
    oracle = copy.deepcopy(model)
    tr = make_trainer(tmp_path, model=model, optim={"grad_clip": 0.0}, adversarial=eps)
    tr.optimizer.step = lambda *a, **k: None  # keep the gradients of step 0 to compare
    tr.optimizer.zero_grad = lambda *a, **k: None
    tr.train_step()

    x, y = RandomTokens().batch_at(0)
    seen = []
    handle = oracle.embed.register_forward_hook(lambda m, a, out: seen.append(out))
    clean = oracle(input_ids=x, labels=y).loss
    handle.remove()
    (g,) = torch.autograd.grad(clean, seen[0], retain_graph=True)
    e = seen[0].detach()
    token_norm = e.pow(2).sum(-1).mean().sqrt()
    r = torch.stack([eps * token_norm * g[b] / g[b].norm() for b in range(len(g))])
    handle = oracle.embed.register_forward_hook(lambda m, a, out: out + r)
    pushed = oracle(input_ids=x, labels=y).loss
    handle.remove()
    assert pushed.item() > clean.item()  # r goes up the loss
    params = [p for p in oracle.parameters() if p.requires_grad]
    expected = torch.autograd.grad(clean + pushed, params)
    got = [p.grad for p in model.parameters() if p.requires_grad]
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-6)
    # the hook is gone after the step: a plain forward pass is the clean one again
    assert model(input_ids=x, labels=y).loss.item() == pytest.approx(clean.item(), rel=1e-6)


def test_a_model_without_embeddings_and_a_negative_eps_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="train.adversarial"):
        embedding_module(NgramClassifier(NgramConfig(vocab_size=9, n_labels=2)))
    with pytest.raises(ConfigError, match="train.adversarial"):
        TrainConfig(adversarial=-0.1)


def test_an_encoder_decoder_gets_a_step_for_each_of_its_two_embedding_calls():
    from lmlab.model import Transformer, preset

    torch.manual_seed(0)
    model = Transformer(preset("transformer", vocab_size=99, d_model=24, n_heads=3, n_layers=2, d_ff=40,
                               max_seq_len=16, dropout=0.0))
    src, tgt = torch.randint(1, 99, (3, 7)), torch.randint(1, 99, (3, 5))
    with adversarial(model, 0.3) as perturb:
        clean = model(input_ids=src, decoder_input_ids=tgt, labels=tgt).loss
        clean.backward()
        perturb()
        pushed = model(input_ids=src, decoder_input_ids=tgt, labels=tgt).loss  # [3, 7] and [3, 5] steps
    assert pushed.item() > clean.item()


def test_a_padded_encoder_batch_is_perturbed_alike_on_the_padding_free_path(monkeypatch):
    """The embeddings keep their [B, T, C] output (model/unpad.py), so r is per example on both paths."""
    from lmlab.model import Transformer, preset
    from lmlab.model import unpad as unpad_module

    monkeypatch.setattr(unpad_module, "ROWS_MULTIPLE", 1)  # the 12 tokens alone, not rounded up to all 21 positions

    losses = []
    for padding_free in (True, False):
        torch.manual_seed(0)
        model = Transformer(preset("bert", head="classification", vocab_size=99, d_model=24, n_heads=3, n_layers=2,
                                   d_ff=40, max_seq_len=16, dropout=0.0, attn_dropout=0.0, unpad=padding_free))
        ids = torch.randint(1, 99, (3, 7))
        mask = (torch.arange(7)[None, :] < torch.tensor([[7], [1], [4]])).long()
        with adversarial(model, 0.3) as perturb:
            model(ids * mask, attention_mask=mask, labels=torch.tensor([0, 1, 1])).loss.backward()
            perturb()
            losses.append(model(ids * mask, attention_mask=mask, labels=torch.tensor([0, 1, 1])).loss.item())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
