"""Choosing the next token: logits processors and per-request random generators.

For one row of logits z ∈ ℝ^V the processors run in Hugging Face's order:

1. repetition penalty (CTRL, Keskar et al. 2019): for every token t already seen,
   z_t ← z_t / θ if z_t > 0 else z_t · θ;
   no repeated n-gram: z_t ← −∞ for every t that would complete an n-gram the row already holds;
2. temperature τ: z ← z / τ (τ = 0 is greedy: argmax of the penalised logits, no randomness);
3. top-k: keep the tokens whose logit is ≥ the k-th largest (ties kept), the rest get −∞;
4. top-p (nucleus, Holtzman et al. 2020): sort by probability, keep a token when the mass of the
   tokens ranked strictly before it is < p (so the kept set is the smallest whose mass ≥ p;
   the most likely token is always kept);

then sample from softmax(z). Rows of a batch may carry different parameters (a server batches
unrelated requests): temperatures, k and p are tensors [B, 1] and each row samples with its
own seeded ``torch.Generator``, so a request's tokens do not depend on what it was batched with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmlab.generate.config import GenerationConfig


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """logits [B, V], seen bool [B, V], penalty [B, 1] → penalised logits [B, V]."""
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


class NGramBlocker:
    """Per row, the tokens that followed each (n−1)-gram so far; `banned(i)` lists those that would
    repeat an n-gram after row i's last n−1 tokens (transformers' NoRepeatNGramLogitsProcessor)."""

    def __init__(self, sizes: list[int]):
        self.sizes = sizes
        self.history: list[list[int]] = [[] for _ in sizes]
        self.follow: list[dict[tuple[int, ...], set[int]]] = [{} for _ in sizes]

    def observe(self, i: int, tokens: list[int]) -> None:
        n, hist, follow = self.sizes[i], self.history[i], self.follow[i]
        if n <= 0:
            return
        for t in tokens:
            hist.append(t)
            if len(hist) >= n:
                follow.setdefault(tuple(hist[len(hist) - n:-1]), set()).add(t)

    def banned(self, i: int) -> list[int]:
        n, hist = self.sizes[i], self.history[i]
        if n <= 0 or len(hist) < n - 1:
            return []
        return sorted(self.follow[i].get(tuple(hist[len(hist) - n + 1:]), ()))

    def reorder(self, index: list[int]) -> None:
        """Row r takes the history of row index[r] (beam search)."""
        self.history = [list(self.history[j]) for j in index]
        self.follow = [{k: set(v) for k, v in self.follow[j].items()} for j in index]


def top_k_filter(logits: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep logits ≥ the k-th largest per row (k [B, 1] int, 0 = keep all); the rest → −∞."""
    v = logits.size(-1)
    k = torch.where(k <= 0, v, k).clamp(max=v)
    kth = logits.topk(int(k.max()), dim=-1).values.gather(-1, k - 1)  # [B, 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Nucleus filter; p [B, 1] in (0, 1] (1 = keep all)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    before = probs.cumsum(-1) - probs  # mass ranked strictly before each token
    remove_sorted = before >= p
    remove_sorted[..., 0] = False
    remove_sorted &= p < 1.0  # p = 1 keeps everything, whatever the rounding of the cumsum
    remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()  # fresh entropy from the OS
    else:
        g.manual_seed(seed)
    return g


class Sampler:
    """Next-token choice for a batch whose rows carry their own `GenerationConfig`."""

    def __init__(self, configs: list[GenerationConfig], vocab_size: int, device: torch.device | str = "cpu",
                 vocab_limit: int | None = None, banned: Sequence[int] = ()):
        """vocab_limit: ids ≥ it are never chosen (a model vocabulary padded beyond its tokenizer's);
        banned: ids never chosen either (an encoder–decoder's pad token)."""
        self.configs = configs
        self.banned = None  # [V] True where a token may never be chosen
        if (vocab_limit is not None and vocab_limit < vocab_size) or banned:
            self.banned = torch.arange(vocab_size, device=device) >= (vocab_limit or vocab_size)
            self.banned[list(banned)] = True
        b = len(configs)
        col = lambda values, dtype: torch.tensor(values, dtype=dtype, device=device).view(b, 1)  # noqa: E731
        self.greedy = [c.greedy for c in configs]
        self.all_greedy = all(self.greedy)
        self.temperature = col([c.temperature if c.temperature > 0 else 1.0 for c in configs], torch.float32)
        self.top_k = col([c.top_k for c in configs], torch.long)
        self.top_p = col([c.top_p for c in configs], torch.float32)
        self.penalty = col([c.repetition_penalty for c in configs], torch.float32)
        self.use_penalty = any(c.repetition_penalty != 1.0 for c in configs)
        self.use_top_k = any(c.top_k > 0 and not c.greedy for c in configs)
        self.use_top_p = any(c.top_p < 1.0 and not c.greedy for c in configs)
        self.generators = [None if c.greedy else make_generator(c.seed, device) for c in configs]
        # tokens already seen per row (prompt + generated), for the repetition penalty
        self.seen = torch.zeros(b, vocab_size, dtype=torch.bool, device=device) if self.use_penalty else None
        sizes = [c.no_repeat_ngram_size for c in configs]
        self.ngrams = NGramBlocker(sizes) if any(sizes) else None
        self.observes = self.seen is not None or self.ngrams is not None  # whether `observe` records anything
        # greedy with nothing to process: the argmax alone (a decode step at batch 1 is ~1.5 ms, this ~10 µs)
        self.argmax_only = self.all_greedy and self.banned is None and not self.use_penalty and not self.observes

    def observe(self, ids: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Record tokens ids [B, T] as seen; positions where `valid` [B, T] is False (padding) are not."""
        if self.ngrams is not None:
            rows, keep = ids.tolist(), (valid.tolist() if valid is not None else None)
            for i, row in enumerate(rows):
                self.ngrams.observe(i, row if keep is None else [t for t, k in zip(row, keep[i]) if k])
        if self.seen is None:
            return
        if valid is None:
            self.seen.scatter_(1, ids, True)
        else:
            counts = torch.zeros(self.seen.shape, dtype=torch.int32, device=ids.device)
            self.seen |= counts.scatter_add_(1, ids, valid.to(torch.int32)) > 0

    def process(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [B, V] (float32) → the processed logits whose softmax is sampled from."""
        if self.banned is not None:
            logits = logits.masked_fill(self.banned, float("-inf"))
        if self.use_penalty:
            logits = apply_repetition_penalty(logits, self.seen, self.penalty)
        if self.ngrams is not None:
            rows = [(i, t) for i in range(logits.size(0)) for t in self.ngrams.banned(i)]
            if rows:
                i, t = torch.tensor(rows, device=logits.device).T
                logits = logits.index_put((i, t), torch.tensor(float("-inf"), device=logits.device))
        if self.all_greedy:
            return logits
        logits = logits / self.temperature
        if self.use_top_k:
            logits = top_k_filter(logits, self.top_k)
        if self.use_top_p:
            logits = top_p_filter(logits, self.top_p)
        return logits

    def reorder(self, index: torch.Tensor) -> None:
        """Rows follow `index` [B] (beam search: each survivor takes its parent beam's state)."""
        if self.seen is not None:
            self.seen = self.seen.index_select(0, index)
        if self.ngrams is not None:
            self.ngrams.reorder(index.tolist())

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """logits [B, V] → next tokens [B] (int64)."""
        if self.argmax_only:
            return logits.max(-1).indices  # argmax (the first of equal maxima, as argmax), in half its time on CPU
        logits = self.process(logits.float())
        choice = logits.max(-1).indices
        if not self.all_greedy:
            probs = logits.softmax(-1)
            for i, g in enumerate(self.generators):
                if g is not None:
                    choice[i] = torch.multinomial(probs[i], 1, generator=g)[0]
        return choice
