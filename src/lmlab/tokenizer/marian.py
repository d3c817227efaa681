"""A Marian checkpoint's SentencePiece tokenizer (``source.spm``, ``target.spm``, ``vocab.json``) as
``tokenizers`` pipelines that encode as transformers' ``MarianTokenizer`` does.

MarianTokenizer segments text with a SentencePiece unigram model (``source.spm`` for sources,
``target.spm`` for ``text_target``), looks each piece up in ``vocab.json`` (one vocabulary shared
by both sides: a piece it lacks is ``<unk>``), appends ``</s>``, and cuts a leading language code
(``>>fra<<``) off the text as a token of its own. Here each side becomes one tokenizer.json
whose ids are vocab.json's:

* model: a Unigram over vocab.json in id order. The side's own pieces keep their SentencePiece
  scores, so the Viterbi segmentation is SentencePiece's, and text that they cannot cover is
  ``<unk>`` (consecutive unknown characters make one ``<unk>``, as in SentencePiece). vocab.json's
  other entries (the other side's pieces) keep their ids but must never be chosen: each is
  renamed ``" " + entry``, which no text can match (the normaliser turns every space into ▁),
  and the decoder drops the space again.
* normaliser and pre-tokenizer: the model's precompiled character map, then its whitespace rules
  (strip, collapse runs of spaces, spaces → ▁, a ▁ prefix on each stretch of text between special
  tokens), in SentencePiece's order, as transformers' ``SpmConverter.build_tokenizer_from_spm_proto``
  lays them out.
* added tokens: ``</s>``, ``<unk>``, ``<pad>`` (special) and vocab.json's language codes
  ``>>xx<<`` (not special: decoding keeps them, as MarianTokenizer's does).
* post-processor: ``$A </s>`` (MarianTokenizer's ``build_inputs_with_special_tokens``).
* decoder: ▁ → space, the text stripped at both ends (MarianTokenizer's ``decode``).

Known differences from MarianTokenizer, all on text outside what the side's model was trained
on: text that the side's SentencePiece model does not know (SentencePiece: one unknown piece)
is ``<unk>`` here, while MarianTokenizer looks its characters up in vocab.json and finds the
other side's piece when there is one; a language code is recognised anywhere in the text
(MarianTokenizer: only at its start, where an unknown code becomes ``<unk>``); a piece of the
SentencePiece model that vocab.json lacks (MarianTokenizer: ``<unk>``) cannot be chosen here,
so its text is segmented into other pieces (`lmlab hf import` reports how many pieces each
side lacks); decoding with special tokens kept does not add MarianTokenizer's space after each.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmlab.artifacts import read_json
from lmlab.errors import ArtifactCorrupt, ArtifactError
from lmlab.tokenizer.sentencepiece_model import NORMAL, USER_DEFINED, SentencePieceModel, read_sentencepiece_model

SOURCE, TARGET, VOCAB = "source.spm", "target.spm", "vocab.json"
DEFAULT_ROLES = {"unk": "<unk>", "eos": "</s>", "pad": "<pad>"}  # MarianTokenizer's defaults
LANGUAGE_CODE = re.compile(r">>.+<<")
HIDDEN = " "  # prefix of a vocabulary entry that this side never produces: no normalised text holds a space
UNK_PENALTY = 10.0  # SentencePiece's kUnkPenalty: an unknown piece scores min_score − 10


@dataclass
class MarianTokenizers:
    source: Any  # tokenizers.Tokenizer for source.spm
    target: Any | None  # for target.spm; None when it is source.spm's model (or absent)
    roles: dict[str, str]
    missing: dict[str, int]  # side's file → pieces of its model that vocab.json lacks


def is_marian(directory: Path) -> bool:
    return (directory / SOURCE).is_file() and (directory / VOCAB).is_file()


def read_vocab(path: Path) -> list[str]:
    """vocab.json ({piece: id}, ids 0 … N−1) → the pieces in id order."""
    vocab = read_json(path)
    if not isinstance(vocab, dict) or not vocab:
        raise ArtifactCorrupt(f"{path}: must be a JSON object mapping each piece to its id")
    by_id: dict[int, str] = {}
    for piece, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(vocab) or i in by_id:
            raise ArtifactCorrupt(f"{path}: {piece!r} has id {i!r}; ids must be the integers 0 … {len(vocab) - 1}, "
                                  "each once")
        by_id[i] = piece
    return [by_id[i] for i in range(len(vocab))]


def _check(model: SentencePieceModel, path: Path) -> None:
    fix = "; lmlab converts Marian's SentencePiece unigram models (transformers' MarianTokenizer reads this one)"
    if model.model_type != "unigram":
        raise ArtifactError(f"{path}: trainer_spec.model_type is {model.model_type}{fix}")
    for flag, value, wanted in (("trainer_spec.byte_fallback", model.byte_fallback, False),
                                ("trainer_spec.treat_whitespace_as_suffix", model.treat_whitespace_as_suffix, False),
                                ("normalizer_spec.escape_whitespaces", model.escape_whitespaces, True)):
        if value != wanted:
            raise ArtifactError(f"{path}: {flag}={str(value).lower()} is not supported{fix}")
    user = [p.piece for p in model.pieces if p.type == USER_DEFINED]
    if user:
        raise ArtifactError(f"{path}: user-defined pieces ({', '.join(user[:4])}) are not supported{fix}")


def side_tokenizer(model: SentencePieceModel, vocab: list[str], roles: dict[str, str]) -> tuple[Any, int]:
    """(tokenizers.Tokenizer over `vocab` that segments as `model`, count of `model`'s pieces not in
    `vocab`)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    scores = {p.piece: p.score for p in model.pieces if p.type == NORMAL}
    specials = [t for t in dict.fromkeys(roles.values()) if t in vocab]
    codes = [t for t in vocab if LANGUAGE_CODE.fullmatch(t) and t not in specials]
    named = set(specials) | set(codes)  # added tokens: they keep their names, which give their ids
    # below any path of single characters across the longest entry: chosen only where nothing else fits
    never = (max(map(len, vocab)) + 1) * (min(min(scores.values(), default=0.0), 0.0) - UNK_PENALTY)
    entries = [(t, scores[t]) if t in scores else (t, never) if t in named else (HIDDEN + t, never) for t in vocab]
    tok = Tokenizer(models.Unigram(entries, unk_id=vocab.index(roles["unk"]), byte_fallback=False))
    steps = [normalizers.Precompiled(model.precompiled_charsmap)] if model.precompiled_charsmap else []
    if model.remove_extra_whitespaces:  # spaces only: SentencePiece leaves newlines alone
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    steps.append(normalizers.Replace(" ", "▁"))
    if model.add_dummy_prefix:  # Metaspace adds no ▁ to text that starts with one; SentencePiece does
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
    tok.normalizer = normalizers.Sequence(steps)
    if model.add_dummy_prefix:  # "always": MarianTokenizer runs SentencePiece on each stretch between specials
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    # Fuse, then strip the one text at both ends, as MarianTokenizer's `str.strip` does
    tok.decoder = decoders.Sequence([decoders.Replace(Regex("^" + HIDDEN), ""), decoders.Replace("▁", " "),
                                     decoders.Fuse(), decoders.Replace(Regex(r"^ +| +$"), "")])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in codes])
    eos = roles["eos"]
    tok.post_processor = processors.TemplateProcessing(single=f"$A {eos}", pair=f"$A $B {eos}",
                                                       special_tokens=[(eos, vocab.index(eos))])
    present = set(vocab)
    return tok, sum(1 for p in scores if p not in present)


def marian_tokenizers(directory: Path, roles: dict[str, str]) -> MarianTokenizers:
    """The source and target tokenizers of a Marian directory; `roles` (role → token) as named in
    its tokenizer_config.json / special_tokens_map.json, over MarianTokenizer's defaults."""
    config = read_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
    if isinstance(config, dict) and config.get("separate_vocabs"):
        raise ArtifactError(f"{directory / 'tokenizer_config.json'}: separate_vocabs=true (a target_vocab.json of "
                            "its own) is not supported; lmlab's encoder–decoder shares one vocabulary")
    vocab = read_vocab(directory / VOCAB)
    roles = {**DEFAULT_ROLES, **{r: t for r, t in roles.items() if r in DEFAULT_ROLES}}
    for role in ("unk", "eos"):
        if roles[role] not in vocab:
            raise ArtifactCorrupt(f"{directory / VOCAB}: has no {roles[role]!r}, the {role} token that "
                                  "tokenizer_config.json names (MarianTokenizer needs it too)")
    roles = {r: t for r, t in roles.items() if t in vocab}
    source = read_sentencepiece_model(directory / SOURCE)
    _check(source, directory / SOURCE)
    src, missing = side_tokenizer(source, vocab, roles)
    out = MarianTokenizers(src, None, roles, {SOURCE: missing})
    target = directory / TARGET
    if target.is_file() and target.read_bytes() != (directory / SOURCE).read_bytes():
        model = read_sentencepiece_model(target)
        _check(model, target)
        out.target, out.missing[TARGET] = side_tokenizer(model, vocab, roles)
    return out
