"""Batches from token shards with exact, resumable state.

* `CausalBlockSampler` — nanoGPT-style random contiguous blocks for causal LM: batch ``step``
  draws `batch_size` start positions uniformly over every position in the split where a block
  of ``block_size + 1`` tokens fits inside one shard; ``x = ids[s : s+T]``, ``y = ids[s+1 : s+T+1]``.
  Blocks cross document boundaries (separated by eos), as in GPT-2 pretraining.
* `MaskedSequenceSampler` — whole documents for masked LM: each document (without its
  separator) is one sequence, or several consecutive windows if longer than
  ``max_seq_len - 2``; wrapped as ``[CLS] … [SEP]``, padded to the longest in the batch;
  shuffled once per epoch.
* `iter_eval_blocks` — every non-overlapping block of a split in order, for validation loss.

Randomness is counter-based: batch ``step`` of a run with ``seed`` uses
``numpy.random.default_rng([seed, step])`` (epoch permutations: ``[seed, epoch]``), so the
state is a few integers, `state_dict()` is JSON, and resuming from it reproduces the
remaining batches exactly whatever happened before — no generator state to pickle.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from lmlab.data.shards import TokenShards
from lmlab.errors import CheckpointMismatch, ConfigError


def _check_state(state: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    for key, value in expected.items():
        if state.get(key) != value:
            raise CheckpointMismatch(f"{what} state: {key} is {state.get(key)!r} in the checkpoint but "
                                     f"{value!r} now; resume with the same data and settings")


class CausalBlockSampler:
    def __init__(self, shards: TokenShards, block_size: int, batch_size: int, seed: int = 0):
        if block_size < 1 or batch_size < 1:
            raise ConfigError("block_size and batch_size must be >= 1")
        self.shards, self.block_size, self.batch_size, self.seed = shards, block_size, batch_size, seed
        # starts available in each shard: len - (T + 1) + 1
        starts = np.array([max(0, len(s) - block_size) for s in shards.shards], dtype=np.int64)
        if starts.sum() == 0:
            longest = max((len(s) for s in shards.shards), default=0)
            raise ConfigError(f"block_size {block_size}: no shard of {shards.directory} ({shards.split}) holds "
                              f"{block_size + 1} tokens (longest: {longest}); use a smaller block_size")
        self.cum = np.concatenate([[0], np.cumsum(starts)])
        self.step = 0

    def batch_at(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each [batch_size, block_size] int64, for a given step (pure function of seed, step)."""
        rng = np.random.default_rng([self.seed, step])
        g = rng.integers(0, self.cum[-1], size=self.batch_size)
        shard = np.searchsorted(self.cum, g, side="right") - 1
        local = g - self.cum[shard]
        T = self.block_size
        buf = np.empty((self.batch_size, T + 1), dtype=np.int64)
        for b in range(self.batch_size):
            buf[b] = self.shards.shards[shard[b]][local[b]:local[b] + T + 1]
        t = torch.from_numpy(buf)
        return t[:, :-1], t[:, 1:]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batch_at(self.step)
        self.step += 1
        return batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next_batch()

    def _identity(self) -> dict[str, Any]:
        return {"kind": "causal_blocks", "seed": self.seed, "block_size": self.block_size,
                "batch_size": self.batch_size, "num_tokens": self.shards.num_tokens}

    def state_dict(self) -> dict[str, Any]:
        return {**self._identity(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state(state, self._identity(), "sampler")
        self.step = int(state["step"])


def iter_eval_blocks(shards: TokenShards, block_size: int, batch_size: int,
                     max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping (x, y) blocks in order through every shard; the last batch may be smaller."""
    T = block_size
    xs: list[np.ndarray] = []
    done = 0
    for shard in shards.shards:
        for s in range(0, len(shard) - T, T):
            xs.append(np.asarray(shard[s:s + T + 1], dtype=np.int64))
            if len(xs) == batch_size:
                t = torch.from_numpy(np.stack(xs))
                yield t[:, :-1], t[:, 1:]
                xs, done = [], done + 1
                if max_batches is not None and done >= max_batches:
                    return
    if xs:
        t = torch.from_numpy(np.stack(xs))
        yield t[:, :-1], t[:, 1:]


class MaskedSequenceSampler:
    def __init__(self, shards: TokenShards, max_seq_len: int, batch_size: int, pad_id: int,
                 cls_id: int | None = None, sep_id: int | None = None, seed: int = 0, shuffle: bool = True):
        n_special = (cls_id is not None) + (sep_id is not None)
        if max_seq_len <= n_special or batch_size < 1:
            raise ConfigError(f"max_seq_len must exceed the {n_special} special tokens and batch_size be >= 1")
        self.shards, self.max_seq_len, self.batch_size = shards, max_seq_len, batch_size
        self.pad_id, self.cls_id, self.sep_id, self.seed, self.shuffle = pad_id, cls_id, sep_id, seed, shuffle
        width = max_seq_len - n_special
        strip = 1 if shards.separator_id is not None else 0
        shard_ix, starts, lengths = [], [], []
        for k, offs in enumerate(shards.offsets):
            doc_start = offs[:-1]
            doc_len = np.maximum(np.diff(offs) - strip, 0)
            pieces = np.maximum((doc_len + width - 1) // width, 0)  # windows per document (0 for empty)
            rep_start = np.repeat(doc_start, pieces)
            within = np.arange(pieces.sum()) - np.repeat(np.cumsum(pieces) - pieces, pieces)
            start = rep_start + within * width
            end = np.repeat(doc_start + doc_len, pieces)
            shard_ix.append(np.full(len(start), k, dtype=np.int32))
            starts.append(start)
            lengths.append(np.minimum(width, end - start))
        self.seq_shard = np.concatenate(shard_ix)
        self.seq_start = np.concatenate(starts).astype(np.int64)
        self.seq_len = np.concatenate(lengths).astype(np.int64)
        if len(self.seq_start) == 0:
            raise ConfigError(f"{shards.directory} ({shards.split}): no non-empty documents")
        self.epoch, self.position = 0, 0
        self._perm_epoch, self._perm = -1, None

    def __len__(self) -> int:
        return len(self.seq_start)

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            n = len(self.seq_start)
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._perm_epoch = epoch
        return self._perm  # type: ignore[return-value]

    def collate(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """{"input_ids", "attention_mask"}: [B, L] int64, L = longest sequence in the batch."""
        seqs = []
        for i in indices:
            start = self.seq_start[i]
            ids = np.asarray(self.shards.shards[self.seq_shard[i]][start:start + self.seq_len[i]], dtype=np.int64)
            parts = (([[self.cls_id]] if self.cls_id is not None else []) + [ids]
                     + ([[self.sep_id]] if self.sep_id is not None else []))
            seqs.append(np.concatenate(parts))
        L = max(len(s) for s in seqs)
        input_ids = np.full((len(seqs), L), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(seqs), L), dtype=np.int64)
        for b, s in enumerate(seqs):
            input_ids[b, :len(s)] = s
            mask[b, :len(s)] = 1
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)}

    def next_batch(self) -> dict[str, torch.Tensor]:
        """The next full batch; an epoch's remainder smaller than a batch is skipped (drop_last)."""
        n = len(self.seq_start)
        if self.position + self.batch_size > n:
            if self.batch_size > n:
                raise ConfigError(f"batch_size {self.batch_size} exceeds the {n} sequences of the split")
            self.epoch, self.position = self.epoch + 1, 0
        idx = self._order(self.epoch)[self.position:self.position + self.batch_size]
        self.position += self.batch_size
        return self.collate(idx)

    def batch_at(self, index: int) -> dict[str, torch.Tensor]:
        """Batch number `index` of the endless epoch sequence (the same batches `next_batch` gives):
        a pure function of (seed, index), so that processes can share out batches by index."""
        per_epoch = len(self.seq_start) // self.batch_size
        if per_epoch == 0:
            raise ConfigError(f"batch_size {self.batch_size} exceeds the {len(self.seq_start)} sequences of the split")
        epoch, k = divmod(index, per_epoch)
        return self.collate(self._order(epoch)[k * self.batch_size:(k + 1) * self.batch_size])

    def iter_epoch(self) -> Iterator[dict[str, torch.Tensor]]:
        """Every sequence once, in stored order, last batch possibly smaller (for evaluation)."""
        for s in range(0, len(self.seq_start), self.batch_size):
            yield self.collate(np.arange(s, min(s + self.batch_size, len(self.seq_start))))

    def _identity(self) -> dict[str, Any]:
        return {"kind": "masked_sequences", "seed": self.seed, "max_seq_len": self.max_seq_len,
                "batch_size": self.batch_size, "shuffle": self.shuffle, "num_sequences": len(self.seq_start)}

    def state_dict(self) -> dict[str, Any]:
        return {**self._identity(), "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_state(state, self._identity(), "sampler")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, mask_id: int, vocab_size: int,
                special_ids: list[int], prob: float = 0.15, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking (Devlin et al. 2019, §3.1): choose `prob` of the real, non-special tokens;
    of those 80 % → [MASK], 10 % → a random token, 10 % unchanged. Returns (inputs, labels)
    with labels = -100 where nothing is predicted."""
    labels = input_ids.clone()
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for s in special_ids:
        special |= input_ids == s
    candidates = (attention_mask.bool()) & ~special
    chosen = (torch.rand(input_ids.shape, generator=generator) < prob) & candidates
    labels[~chosen] = -100
    inputs = input_ids.clone()
    r = torch.rand(input_ids.shape, generator=generator)
    inputs[chosen & (r < 0.8)] = mask_id
    rand = chosen & (r >= 0.8) & (r < 0.9)
    inputs[rand] = torch.randint(vocab_size, input_ids.shape, generator=generator)[rand]
    return inputs, labels
