"""`train_tokenizer`: a corpus → a tokenizer directory that lmlab and transformers both load (stage ②).

    lmlab tokenizer train out/corpus --kind bpe --vocab-size 8000 --out out/tok

Kinds, all built on Hugging Face ``tokenizers`` (the Rust library, streamed from an iterator):

* ``bpe`` — byte-level BPE as in GPT-2 (Radford et al. 2019; Sennrich et al. 2016): the GPT-2
  pre-tokenising regex over bytes mapped to printable characters, so every string round-trips
  exactly and there is no unknown token.
* ``wordpiece`` — BERT's WordPiece (Devlin et al. 2019; Wu et al. 2016): BERT's normaliser
  (control characters removed, every CJK ideograph surrounded by spaces as in
  bert-base-chinese, optional lowercasing with accent stripping; NFKC before it, see
  `TokenizerConfig.nfkc`), whitespace-and-punctuation
  pre-tokeniser, ``##`` continuation prefix; writes ``vocab.txt`` in id order for
  ``transformers.BertTokenizer`` and a ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` template.
* ``unigram`` — the Unigram language model (Kudo 2018) with SentencePiece's ``▁`` metaspace.
  WordPiece keeps the `limit_alphabet` most frequent characters (by default those covering
  99.95 % of the text, within [vocab_size // 4, vocab_size // 2], so that merges have room: each
  character also gets its ``##`` form); rarer ones become [UNK].
  The vocabulary can still slightly exceed `vocab_size`; the real size is reported.
  Training WordPiece or Unigram twice on the same text may give different vocabularies
  (measured: 4 runs on the test fixture, 4 different files each; byte-level BPE gave 1):
  ``tokenizers`` numbers WordPiece's ``##`` tokens in hash-map order, which then breaks
  frequency ties between merges (huggingface/tokenizers#1794, fix pending upstream). Runs are
  reproducible from a trained tokenizer directory (hashed in its manifest, reused by later
  stages), not from retraining it.
* ``char`` — one id per character (Unicode code point), the `vocab_size` most frequent ones
  (ties broken by code point), always including the newline; unseen characters map to the
  unknown token.

Special tokens come first in the vocabulary (ids 0..k-1) in the order of
`TokenizerConfig.special_tokens`, a role → token mapping (roles: pad unk bos eos cls sep mask,
anything else is an additional special token). Files written::

    tokenizer.json            the full pipeline (tokenizers)
    tokenizer_config.json     class, special tokens, model_max_length (transformers)
    special_tokens_map.json   role → token (transformers)
    vocab.txt                 wordpiece only: one token per line, line number = id
    lmlab_tokenizer.json      kind and special-token roles (lmlab's `Tokenizer.load`)
    stats.json, config.yaml, manifest.json
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

from lmlab.artifacts import ArtifactWriter
from lmlab.config import check, load_config
from lmlab.corpus.filters import HAN_CHARACTER
from lmlab.errors import DataError

Kind = Literal["bpe", "wordpiece", "unigram", "char"]

DEFAULT_SPECIALS: dict[str, dict[str, str]] = {
    "bpe": {"eos": "<|endoftext|>", "pad": "<|pad|>"},
    "wordpiece": {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]"},
    "unigram": {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>", "mask": "<mask>"},
    "char": {"pad": "<pad>", "unk": "<unk>", "bos": "<s>", "eos": "</s>"},
}
HF_ROLES = ("bos", "eos", "unk", "pad", "cls", "sep", "mask")


@dataclass
class TokenizerConfig:
    kind: Kind = "bpe"
    vocab_size: int = 8000  # including special tokens
    # bpe/wordpiece: merges or words seen fewer times are not learned; char: rarer characters are unknown
    min_frequency: int = 2
    special_tokens: dict[str, str] = field(default_factory=dict)  # role → token; empty: the kind's defaults
    lowercase: bool = False  # wordpiece only (also strips accents, as BERT uncased)
    # wordpiece: most frequent characters kept, rarer ones are [UNK]; 0: those covering 99.95 % of the
    # corpus's characters (SentencePiece's character_coverage for CJK), between vocab_size // 4 and // 2
    limit_alphabet: int = 0
    # wordpiece, unigram: NFKC first, as the corpus stage's cleaning does (and SentencePiece), so that
    # raw text at fine-tuning (full-width ，（０９）, ligatures) meets the vocabulary trained on clean text
    nfkc: bool = True
    # bpe: every CJK character its own pre-token, so merges never cross one (a Chinese word is then
    # the same tokens wherever it occurs, as a copying seq2seq model needs); other text as before
    split_cjk: bool = False
    model_max_length: int = 1024  # written to tokenizer_config.json
    split: str = "train"  # which split of a corpus directory to train on
    max_documents: int = 0  # 0: all

    def __post_init__(self) -> None:
        check(self.vocab_size >= 8, "tokenizer.vocab_size", "must be at least 8")
        check(self.vocab_size <= 4_000_000, "tokenizer.vocab_size", "must be at most 4,000,000")
        check(self.min_frequency >= 1, "tokenizer.min_frequency", "must be >= 1")
        check(self.limit_alphabet >= 0, "tokenizer.limit_alphabet", "must be >= 0")
        check(self.max_documents >= 0, "tokenizer.max_documents", "must be >= 0")
        check(self.model_max_length >= 1, "tokenizer.model_max_length", "must be >= 1")
        check(all(self.specials().values()), "tokenizer.special_tokens", "tokens must be non-empty")
        if self.kind in ("wordpiece", "unigram", "char"):
            check("unk" in self.specials(), "tokenizer.special_tokens", f"{self.kind} needs an 'unk' token")

    def specials(self) -> dict[str, str]:
        return dict(self.special_tokens) if self.special_tokens else dict(DEFAULT_SPECIALS[self.kind])


def _unique(tokens: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(tokens))


def build_untrained(cfg: TokenizerConfig) -> tuple[Any, Any]:
    """(tokenizers.Tokenizer with its pipeline, trainer) for the kind."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    sp = cfg.specials()
    specials = _unique(sp.values())
    if cfg.kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        if cfg.split_cjk:
            tok.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(HAN_CHARACTER), behavior="isolated"), tok.pre_tokenizer])
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                      special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif cfg.kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=sp["unk"], continuing_subword_prefix="##",
                                         max_input_chars_per_word=100))
        bert = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                          lowercase=cfg.lowercase)
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), bert]) if cfg.nfkc else bert
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                            special_tokens=specials, continuing_subword_prefix="##",
                                            limit_alphabet=cfg.limit_alphabet or max(1, cfg.vocab_size // 4),
                                            show_progress=False)
    elif cfg.kind == "unigram":
        tok = Tokenizer(models.Unigram())
        if cfg.nfkc:
            tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        trainer = trainers.UnigramTrainer(vocab_size=cfg.vocab_size, special_tokens=specials,
                                          unk_token=sp["unk"], show_progress=False, max_piece_length=16)
    else:  # char: no trainer, the vocabulary is counted in `_train_char`
        tok = Tokenizer(models.WordLevel({sp["unk"]: 0}, unk_token=sp["unk"]))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()
        trainer = None
    return tok, trainer


def _train_char(texts: Iterator[str], cfg: TokenizerConfig) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    counts: collections.Counter[str] = collections.Counter()
    for t in texts:
        counts.update(t)
    # a newline is always a character of the vocabulary: documents read a line at a time
    # never show one, yet generated and multi-line text needs it
    counts["\n"] = max(counts["\n"], cfg.min_frequency)
    specials = _unique(cfg.specials().values())
    chars = sorted((c for c, n in counts.items() if n >= cfg.min_frequency and c not in specials),
                   key=lambda c: (-counts[c], ord(c)))[: max(0, cfg.vocab_size - len(specials))]
    vocab = {t: i for i, t in enumerate(specials + sorted(chars))}  # characters in code point order: readable ids
    tok = Tokenizer(models.WordLevel(vocab, unk_token=cfg.specials()["unk"]))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return tok


def _add_postprocessor(tok: Any, cfg: TokenizerConfig) -> None:
    from tokenizers import processors

    if cfg.kind == "wordpiece":
        sp = cfg.specials()
        cls, sep = sp.get("cls"), sp.get("sep")
        if cls and sep:
            tok.post_processor = processors.TemplateProcessing(
                single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
                special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])


def write_hf_files(tok: Any, cfg: TokenizerConfig, directory: Path) -> None:
    """tokenizer.json + tokenizer_config.json + special_tokens_map.json (+ vocab.txt) in `directory`."""
    sp = cfg.specials()
    tok.save(str(directory / "tokenizer.json"))
    special_map = {f"{role}_token": token for role, token in sp.items() if role in HF_ROLES}
    extra = [t for role, t in sp.items() if role not in HF_ROLES]
    if cfg.kind == "bpe":  # GPT-2 convention: one token serves as bos, eos and unk
        eos = sp.get("eos")
        if eos:
            special_map.setdefault("bos_token", eos)
            special_map.setdefault("unk_token", eos)
    if extra:
        special_map["additional_special_tokens"] = extra
    tk_config: dict[str, Any] = {
        # transformers' BertTokenizer rebuilds BERT's normaliser from its arguments, dropping NFKC;
        # the generic fast class runs tokenizer.json as written
        "tokenizer_class": "BertTokenizer" if cfg.kind == "wordpiece" and not cfg.nfkc else "PreTrainedTokenizerFast",
        "model_max_length": cfg.model_max_length,
        "clean_up_tokenization_spaces": False,
        **special_map,
    }
    if cfg.kind == "wordpiece":
        tk_config.update({"do_lower_case": cfg.lowercase, "tokenize_chinese_chars": True,
                          "strip_accents": None, "do_basic_tokenize": True})
        vocab = tok.get_vocab()
        by_id = sorted(vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise DataError("wordpiece vocabulary ids are not contiguous; cannot write vocab.txt")
        (directory / "vocab.txt").write_text("".join(t + "\n" for t, _ in by_id), encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(tk_config, indent=2, ensure_ascii=False) + "\n",
                                                     encoding="utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2, ensure_ascii=False) + "\n",
                                                       encoding="utf-8")
    meta = {"kind": cfg.kind, "special_tokens": sp, "lowercase": cfg.lowercase, "vocab_size": tok.get_vocab_size()}
    (directory / "lmlab_tokenizer.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n",
                                                    encoding="utf-8")


def _covering_alphabet(texts: Iterable[str], vocab_size: int, coverage: float = 0.9995) -> int:
    """How many of the most frequent characters cover `coverage` of all (non-space) characters,
    kept between vocab_size // 4 (room for English's merges) and vocab_size // 2 (for Chinese,
    where every character is a word: a quarter of 8,000 left 3 % of CMRC2018's text [UNK])."""
    counts: collections.Counter[str] = collections.Counter()
    for t in texts:
        counts.update(t)
    for space in [c for c in counts if c.isspace()]:
        del counts[space]
    need, n, seen = coverage * sum(counts.values()), 0, 0
    for n, (_, k) in enumerate(counts.most_common(), 1):
        seen += k
        if seen >= need:
            break
    return min(max(n, vocab_size // 4, 1), max(1, vocab_size // 2))


def _texts(corpus: str | Path | list[str], cfg: TokenizerConfig, stats: dict[str, int]) -> Iterator[str]:
    from lmlab.corpus.pipeline import iter_documents

    sources = [corpus] if isinstance(corpus, (str, Path)) else list(corpus)
    n = 0
    for src in sources:
        for text in iter_documents(src, cfg.split):
            if cfg.max_documents and n >= cfg.max_documents:
                return
            n += 1
            stats["documents"] += 1
            stats["characters"] += len(text)
            yield text


def train_tokenizer(corpus: str | Path | list[str], out: str | Path, kind: str | None = None,
                    vocab_size: int | None = None, config: TokenizerConfig | str | Path | None = None,
                    overrides: list[str] = (), overwrite: bool = False) -> dict[str, Any]:  # type: ignore[assignment]
    """Train a tokenizer on a corpus directory (its train split) or text files; write `out`.

    `kind` and `vocab_size` override the config (``--tokenizer.kind`` also works)."""
    over = list(overrides)
    if kind is not None:
        over.append(f"--kind={kind}")
    if vocab_size is not None:
        over.append(f"--vocab_size={vocab_size}")
    over = [o.replace("--tokenizer.", "--", 1) for o in over]
    if isinstance(config, TokenizerConfig):
        from lmlab.config import from_dict, merge, parse_overrides, to_dict

        cfg = from_dict(TokenizerConfig, merge(to_dict(config), parse_overrides(over)))
    else:
        cfg = load_config(TokenizerConfig, config, over)
    stats = {"documents": 0, "characters": 0}
    t0 = time.perf_counter()
    texts = _texts(corpus, cfg, stats)
    if cfg.kind == "char":
        tok = _train_char(texts, cfg)
    else:
        if cfg.kind == "wordpiece" and not cfg.limit_alphabet:
            cfg = dataclasses.replace(cfg, limit_alphabet=_covering_alphabet(
                _texts(corpus, cfg, {"documents": 0, "characters": 0}), cfg.vocab_size))
            texts = _texts(corpus, cfg, stats)
        tok, trainer = build_untrained(cfg)
        try:
            tok.train_from_iterator(texts, trainer=trainer)
        except Exception as e:  # tokenizers raises bare Exceptions
            if "not large enough to contain all chars" in str(e):
                raise DataError(f"{corpus}: {cfg.kind} needs vocab_size larger than the number of distinct "
                                f"characters in the corpus ({cfg.vocab_size} is not); raise --vocab-size") from None
            raise
    if stats["documents"] == 0:
        raise DataError(f"{corpus}: no documents to train on")
    _add_postprocessor(tok, cfg)
    for role, token in cfg.specials().items():  # the trainers put specials first; make sure
        if tok.token_to_id(token) is None:
            raise DataError(f"special token {token!r} ({role}) is missing from the trained vocabulary")
    seconds = time.perf_counter() - t0
    with ArtifactWriter(out, kind="lmlab-tokenizer", config=cfg, overwrite=overwrite) as w:
        write_hf_files(tok, cfg, w.path)
        summary = {"kind": cfg.kind, "vocab_size": tok.get_vocab_size(), "requested_vocab_size": cfg.vocab_size,
                   "documents": stats["documents"], "characters": stats["characters"],
                   "seconds": round(seconds, 2)}
        stats_json = json.dumps({k: v for k, v in summary.items() if k != "seconds"}, indent=2)
        (w.path / "stats.json").write_text(stats_json + "\n", encoding="utf-8")
    return {"out": str(out), **summary}
