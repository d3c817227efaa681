"""Beam search with a length penalty, with the semantics of Hugging Face ``generate(num_beams=n)``.

Per prompt, n running beams (initially one live beam, the others at −10⁹ so that step one
does not pick the same token n times). At each step (g = tokens generated so far, the
current one included):

1. scores of all n·V continuations: running score + log softmax(logits) (repetition penalty
   and n-gram blocking, if any, applied to the log-probabilities as transformers does);
2. the top K = max(2, 1 + #eos)·n continuations; a continuation "hits" when its token is a stop
   token or g reached max_new_tokens;
3. the best n continuations that do not hit become the next running beams (the key/value cache
   rows are permuted to follow them);
4. hits among the top n become finished hypotheses with score  Σ log p / g^length_penalty;
   the n best finished hypotheses are kept;
5. stop when every candidate hits, or when (early_stopping=False) the best running score
   divided by g^length_penalty cannot beat the worst of n finished hypotheses (with
   early_stopping=True: as soon as n hypotheses are finished; "never": using the longest
   possible length when length_penalty > 0).

The answer is the best finished hypothesis (its stop token included). Tested equal to
``transformers`` on models exported with `lmlab.hf.convert.export_hf`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from lmlab.generate.completion import Completion, encode_prompt, stop_ids
from lmlab.generate.config import GenerationConfig
from lmlab.generate.decode import DecodeLoop, Stepper
from lmlab.generate.sampling import Sampler

NEG = -1.0e9  # transformers' "impossible" score


@dataclass
class Hypothesis:
    token_ids: list[int]  # generated tokens (a final stop token included)
    score: float  # Σ log p / length^length_penalty


def beam_search(model, prompts: Sequence[Sequence[int]], config: GenerationConfig,
                stop_token_ids: Sequence[int] = (), decoder_start_id: int | None = None,
                pad_id: int | None = None, vocab_limit: int | None = None) -> list[Hypothesis]:
    """The best hypothesis for each prompt (token ids; the source for an encoder–decoder)."""
    n = config.num_beams
    # DecodeLoop validates the prompts and works out each row's budget and start token.
    plan = DecodeLoop(model, prompts, config, [list(stop_token_ids)] * len(prompts),
                      decoder_start_id=decoder_start_id, pad_id=pad_id, vocab_limit=vocab_limit)
    max_new = min(plan.budget)
    with torch.inference_mode():
        return _search(model, plan, n, max_new, config, set(stop_token_ids))


def _search(model, plan: DecodeLoop, n: int, max_new: int, config: GenerationConfig, eos: set[int]):
    b, v = len(plan.prompts), model.config.vocab_size
    rows = [p for p in plan.prompts for _ in range(n)]  # prompt i → rows i·n … i·n + n − 1
    stepper = Stepper(model, rows, max_new, plan.pad_id, plan.decoder_start_id)
    device = stepper.first_ids.device
    greedy = [config.replace(temperature=0)] * (b * n)
    sampler = Sampler(greedy, v, device, plan.vocab_limit, plan.banned)  # the penalty and the bans
    sampler.observe(stepper.first_ids, stepper.first_mask)
    lp, early = config.length_penalty, config.early_stopping
    k = max(2, 1 + len(eos)) * n
    top_n = torch.arange(k, device=device) < n  # [K]
    eos_t = torch.tensor(sorted(eos), dtype=torch.long, device=device)
    offset = torch.arange(b, device=device)[:, None] * n  # [B, 1] first row of each prompt

    running = torch.full((b, n, max_new), -1, dtype=torch.long, device=device)
    running_score = torch.full((b, n), NEG, device=device)
    running_score[:, 0] = 0.0
    done_seq = running.clone()
    done_len = torch.zeros((b, n), dtype=torch.long, device=device)
    done_score = torch.full((b, n), NEG, device=device)
    is_done = torch.zeros((b, n), dtype=torch.bool, device=device)
    improvable = torch.ones((b, 1), dtype=torch.bool, device=device)

    logits = stepper.forward(stepper.first_ids)
    for g in range(1, max_new + 1):
        logp = sampler.process(logits.float().log_softmax(-1))  # [B·n, V]
        acc = (logp.view(b, n, v) + running_score[:, :, None]).view(b, n * v)
        cand_score, cand = acc.topk(k, dim=-1)  # [B, K]
        beam, tok = cand // v, cand % v
        cand_seq = running.gather(1, beam[:, :, None].expand(b, k, max_new)).clone()  # [B, K, max_new]
        cand_seq[:, :, g - 1] = tok
        hits = torch.isin(tok, eos_t) | (g >= max_new)  # [B, K]

        # 3. next running beams: the best n that continue
        live_score = cand_score + hits.float() * NEG
        pick = live_score.topk(n, dim=-1).indices  # [B, n]
        running = cand_seq.gather(1, pick[:, :, None].expand(b, n, max_new))
        running_score = live_score.gather(1, pick)
        origin = beam.gather(1, pick)  # [B, n] beam each survivor came from

        # 4. finished hypotheses
        new_score = cand_score / (g ** lp)
        if early is True:
            new_score = new_score + (is_done.all(-1, keepdim=True)).float() * NEG
        new_score = new_score + (~improvable).float() * NEG + (~(hits & top_n)).float() * NEG
        merged_score = torch.cat((done_score, new_score), 1)  # [B, n + K]
        keep = merged_score.topk(n, dim=-1).indices
        done_seq = torch.cat((done_seq, cand_seq), 1).gather(1, keep[:, :, None].expand(b, n, max_new))
        done_len = torch.cat((done_len, torch.full_like(cand, g)), 1).gather(1, keep)
        done_score = merged_score.gather(1, keep)
        is_done = torch.cat((is_done, hits & top_n), 1).gather(1, keep)

        # 5. can anything still improve?
        best_len = max_new if (early == "never" and lp > 0) else g
        best_possible = running_score[:, :1] / (best_len ** lp)
        worst_done = torch.where(is_done, done_score.min(-1, keepdim=True).values, torch.full_like(done_score, NEG))
        improvable = improvable & (best_possible > worst_done).any(-1, keepdim=True)
        finished_all = bool(is_done.all()) and early is True
        if not bool(improvable.any()) or finished_all or bool(hits.all()):
            break
        index = (origin + offset).view(-1)
        stepper.reorder(index)
        sampler.reorder(index)
        last = running[:, :, g - 1].reshape(b * n, 1)
        sampler.observe(last)
        logits = stepper.forward(last)

    out = []
    for i in range(b):
        length = int(done_len[i, 0])
        out.append(Hypothesis(done_seq[i, 0, :length].tolist(), float(done_score[i, 0])))
    return out


def beam_search_text(model, tokenizer, prompts: list[str], config: GenerationConfig):
    """Beam search from text to `Completion`s (stop token and stop strings handled as in streams)."""
    ids = [encode_prompt(model, tokenizer, p) for p in prompts]
    stops = stop_ids(tokenizer, config)
    hyps = beam_search(model, ids, config, stops, pad_id=tokenizer.pad_id, vocab_limit=tokenizer.vocab_size)
    out = []
    for prompt_ids, h in zip(ids, hyps):
        tokens = h.token_ids
        ended = bool(tokens) and tokens[-1] in stops
        text = tokenizer.decode(tokens[:-1] if ended else tokens, skip_special_tokens=config.skip_special_tokens)
        cuts = [i for i in (text.find(s) for s in config.stop) if i >= 0]
        if cuts:
            text = text[:min(cuts)]
        out.append(Completion(text, tokens, "stop" if ended or cuts else "length", len(prompt_ids)))
    return out
