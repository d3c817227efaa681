"""Decoding for the encoder–decoder tasks: greedy search, and beam search with a length
penalty, both on the model's KV cache (the encoder runs once; each step feeds one token).

This is the one function the seq2seq tasks call (`generate_ids`), so that it can delegate to
`lmlab.generate` when that package is in the tree, without touching the tasks.

Beam search (as in Hugging Face ``generate`` and fairseq): keep the `num_beams` best partial
hypotheses by summed log-probability; a hypothesis that emits EOS is finished with score
Σ log p / len^length_penalty (len counts the EOS); an example stops when it has `num_beams`
finished hypotheses, all at most ``max_new_tokens`` long. The cache rows of surviving beams
are gathered at every step.
"""

from __future__ import annotations

import torch

from lmlab.model.attention import KVCache


def _step(model, src, src_mask, memory, tokens, cache) -> torch.Tensor:
    """Log-probabilities of the next token, [N, V]."""
    out = model(src, attention_mask=src_mask, decoder_input_ids=tokens, memory=memory, cache=cache)
    return torch.log_softmax(out.logits[:, -1].float(), -1)


@torch.no_grad()
def generate_ids(model, src: torch.Tensor, src_mask: torch.Tensor, bos: int, eos: int, max_new_tokens: int,
                 num_beams: int = 1, length_penalty: float = 1.0) -> list[list[int]]:
    """src [B, S] → for each example the generated ids (without BOS and EOS)."""
    model.eval()
    device = next(model.parameters()).device
    src, src_mask = src.to(device), src_mask.to(device)
    b = src.size(0)
    max_new_tokens = min(max_new_tokens, model.config.max_seq_len)
    if num_beams > 1:
        src, src_mask = src.repeat_interleave(num_beams, 0), src_mask.repeat_interleave(num_beams, 0)
    memory, _ = model.encode(src, src_mask)  # [N, S, C]
    n_rows = src.size(0)
    cache = KVCache.for_model(model.config, n_rows, max_len=max_new_tokens, dtype=memory.dtype, device=device)
    tokens = torch.full((n_rows, 1), bos, dtype=torch.long, device=device)
    if num_beams == 1:
        done = torch.zeros(b, dtype=torch.bool)
        out: list[list[int]] = [[] for _ in range(b)]
        for _ in range(max_new_tokens):
            nxt = _step(model, src, src_mask, memory, tokens, cache).argmax(-1).cpu()  # [B]
            for i in range(b):
                if not done[i]:
                    if int(nxt[i]) == eos:
                        done[i] = True
                    else:
                        out[i].append(int(nxt[i]))
            if bool(done.all()):
                break
            tokens = nxt[:, None].to(device)
        return out

    k = num_beams
    scores = torch.zeros(b, k)
    scores[:, 1:] = float("-inf")  # all beams start identical: expand from the first only
    seqs: list[list[int]] = [[] for _ in range(b * k)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    active = [True] * b
    for step in range(max_new_tokens):
        logp = _step(model, src, src_mask, memory, tokens, cache).cpu()  # [B·k, V]
        vocab = logp.size(-1)
        cand = (scores.view(-1, 1) + logp).view(b, k * vocab)
        top_scores, top_idx = cand.topk(2 * k, dim=-1)  # [B, 2k]
        rows, new_tokens, new_scores, new_seqs = [], [], [], []
        for i in range(b):
            kept = 0
            for s, idx in zip(top_scores[i].tolist(), top_idx[i].tolist()):
                beam, tok = divmod(idx, vocab)
                row = i * k + beam
                if not active[i] or s == float("-inf"):
                    break
                if tok == eos:
                    if len(finished[i]) < k:
                        finished[i].append((s / (step + 1) ** length_penalty, seqs[row]))
                    continue
                rows.append(row)
                new_tokens.append(tok)
                new_scores.append(s)
                new_seqs.append(seqs[row] + [tok])
                kept += 1
                if kept == k:
                    break
            if active[i] and len(finished[i]) >= k:
                active[i] = False
            while len(rows) < (i + 1) * k:  # inactive example: keep its rows as placeholders
                rows.append(i * k)
                new_tokens.append(eos)
                new_scores.append(float("-inf"))
                new_seqs.append(seqs[i * k])
        if not any(active):
            break
        index = torch.tensor(rows, device=device)
        for layer in range(len(cache.k)):
            cache.k[layer] = cache.k[layer].index_select(0, index)
            cache.v[layer] = cache.v[layer].index_select(0, index)
        scores = torch.tensor(new_scores).view(b, k)
        seqs = new_seqs
        tokens = torch.tensor(new_tokens, device=device)[:, None]
    results = []
    for i in range(b):
        pool = list(finished[i])
        if len(pool) < k:  # unfinished hypotheses compete at their current length
            n = max_new_tokens
            pool += [(float(scores[i, j]) / n ** length_penalty, seqs[i * k + j])
                     for j in range(k) if scores[i, j] != float("-inf")]
        results.append(max(pool, key=lambda x: x[0])[1] if pool else [])
    return results
