"""`Tokenizer`: a trained tokenizer directory loaded for use (encode, decode, special ids).

A thin, typed face over ``tokenizers.Tokenizer`` that knows the special-token *roles*
(pad, unk, bos, eos, cls, sep, mask) written by `train_tokenizer`, so the data and training
code can ask for ``tok.eos_id`` instead of guessing token strings. Ids equal those of
``transformers.AutoTokenizer.from_pretrained(DIR)`` for the same ``add_special_tokens``;
lmlab's default is ``add_special_tokens=False`` (language-model shards want raw ids and add
their own document separators), Hugging Face's is True.

    tok = Tokenizer.load("out/tok")
    ids = tok.encode("你好, world")            # list[int]
    tok.decode(ids) == "你好, world"           # exact for bpe (byte-level)
    tok.eos_id, tok.pad_id, tok.vocab_size    # special ids by role (None if absent)
    for piece in tok.iter_decode(ids): ...     # streaming, never half a character

A tokenizer.json may carry its own padding and truncation (sentence-transformers' files pad
every input to 128 tokens); loading switches both off, because lmlab pads each batch to its
longest row and truncates where the task says, with an attention mask that marks the pads.
A directory of Hugging Face tokenizer files alone (tokenizer.json, BERT's vocab.txt, or Marian's
source.spm + target.spm + vocab.json) loads too, with its roles from special_tokens_map.json /
tokenizer_config.json; `lmlab hf import` writes those roles into lmlab_tokenizer.json
(``"source": "hf"``).

An encoder–decoder's target text may have a segmentation of its own (Marian: target.spm, over
the same vocabulary): `encode_target` uses target_tokenizer.json where the directory has one
(lmlab_tokenizer.json names it), else the one tokenizer; ids and decoding are shared.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterator

from lmlab.artifacts import ArtifactWriter, read_json, verify, write_json
from lmlab.errors import ArtifactCorrupt, ArtifactError, ConfigError

KIND = "lmlab-tokenizer"
TARGET_FILE = "target_tokenizer.json"  # an encoder–decoder's target-side segmentation (Marian's target.spm)
FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "lmlab_tokenizer.json", "vocab.txt",
         "stats.json", TARGET_FILE)
ROLES = ("pad", "unk", "bos", "eos", "cls", "sep", "mask")
ROLE_FILES = ("special_tokens_map.json", "tokenizer_config.json")  # where Hugging Face names the roles (first wins)


def read_backend(path: Path) -> Any:
    """tokenizer.json → ``tokenizers.Tokenizer`` with the file's own padding and truncation off."""
    from tokenizers import Tokenizer as Backend

    try:
        backend = Backend.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception on a bad file
        raise ArtifactCorrupt(f"{path}: cannot be loaded ({e})") from None
    backend.no_padding()
    backend.no_truncation()
    return backend


def hf_roles(directory: Path) -> dict[str, str]:
    """role → token from Hugging Face's special_tokens_map.json / tokenizer_config.json
    (``"eos_token": "</s>"`` or ``{"content": "</s>", ...}``)."""
    roles: dict[str, str] = {}
    for name in ROLE_FILES:
        if (directory / name).is_file():
            data = read_json(directory / name)
            for role in ROLES:
                value = data.get(f"{role}_token") if isinstance(data, dict) else None
                token = value.get("content") if isinstance(value, dict) else value
                if isinstance(token, str) and token:
                    roles.setdefault(role, token)
    return roles


def hf_kind(tokenizer_json: Path) -> str:
    """lmlab's kind of a tokenizer.json: bpe (byte-level, as GPT-2's), wordpiece, unigram, or hf-TYPE."""
    data = read_json(tokenizer_json)
    model = (data.get("model") or {}).get("type", "")
    decoder = data.get("decoder") or {}
    if model == "BPE" and decoder.get("type") == "ByteLevel":
        return "bpe"
    return {"WordPiece": "wordpiece", "Unigram": "unigram"}.get(model, f"hf-{model.lower() or 'unknown'}")


class Tokenizer:
    def __init__(self, backend: Any, kind: str, special_tokens: dict[str, str], meta: dict[str, Any] | None = None,
                 target: Any = None):
        self.backend = backend  # tokenizers.Tokenizer
        self.target_backend = target  # tokenizers.Tokenizer for target-side text, or None: `backend` serves both
        self.kind = kind
        self.special_tokens = dict(special_tokens)
        self.meta = meta or {}
        self.special_ids = {role: backend.token_to_id(tok) for role, tok in special_tokens.items()}

    # ------------------------------------------------------------------ loading and saving
    @classmethod
    def load(cls, directory: str | Path, verify_hashes: bool = True) -> "Tokenizer":
        """Load a directory written by `train_tokenizer` (its tokenizer files are hash-checked,
        unless the caller already verified them, e.g. through a model directory's manifest)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ArtifactError(f"{directory}: no such directory; give a directory written by "
                                "`lmlab tokenizer train` or `lmlab hf import`")
        if not (directory / "lmlab_tokenizer.json").is_file():
            return cls.from_hf_files(directory)
        meta = read_json(directory / "lmlab_tokenizer.json")
        target = meta.get("target")
        if target is not None and target != TARGET_FILE:
            raise ArtifactCorrupt(f"{directory / 'lmlab_tokenizer.json'}: target must be {TARGET_FILE!r}, "
                                  f"not {target!r}")
        if verify_hashes:
            verify(directory, kind=KIND, only=["tokenizer.json", "lmlab_tokenizer.json"] + ([target] if target else []))
        tok = cls(read_backend(directory / "tokenizer.json"), meta["kind"], meta["special_tokens"], meta,
                  read_backend(directory / target) if target else None)
        missing = [r for r, i in tok.special_ids.items() if i is None]
        if missing:
            raise ArtifactCorrupt(f"{directory}: special tokens {missing} are not in the vocabulary")
        tok.directory = directory
        return tok

    @classmethod
    def from_hf_files(cls, directory: str | Path) -> "Tokenizer":
        """Hugging Face tokenizer files alone: Marian's SentencePiece models (converted: see
        `lmlab.tokenizer.marian`), else tokenizer.json, else BERT's vocab.txt; roles from
        special_tokens_map.json / tokenizer_config.json (those absent from the vocabulary dropped)."""
        from lmlab.tokenizer.marian import is_marian, marian_tokenizers

        directory = Path(directory)
        roles = hf_roles(directory)
        target, extra = None, {}
        if is_marian(directory):  # before tokenizer.json: MarianTokenizer reads these, whatever else is there
            marian = marian_tokenizers(directory, roles)
            backend, kind, roles, target = marian.source, "unigram", marian.roles, marian.target
            extra = {"pieces_not_in_vocab": marian.missing}
        elif (directory / "tokenizer.json").is_file():
            backend, kind = read_backend(directory / "tokenizer.json"), hf_kind(directory / "tokenizer.json")
        elif (directory / "vocab.txt").is_file():
            from tokenizers import BertWordPieceTokenizer

            lower = True
            if (directory / "tokenizer_config.json").is_file():
                lower = bool(read_json(directory / "tokenizer_config.json").get("do_lower_case", True))
            backend = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=lower)._tokenizer
            roles = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]", **roles}
            kind = "wordpiece"
        else:
            present = sorted(p.name for p in directory.iterdir())
            raise ArtifactError(f"{directory}: no tokenizer lmlab can read (lmlab_tokenizer.json, tokenizer.json, "
                                f"vocab.txt, or source.spm with vocab.json; found {', '.join(present) or 'nothing'}); "
                                "save the tokenizer with transformers' save_pretrained, which writes tokenizer.json, "
                                "and import again")
        roles = {r: t for r, t in roles.items() if backend.token_to_id(t) is not None}
        meta = {"kind": kind, "special_tokens": roles, "source": "hf", **extra}
        if target is not None:
            meta["target"] = TARGET_FILE
        tok = cls(backend, kind, roles, meta, target)
        tok.directory = directory
        return tok

    def require(self, role: str, purpose: str) -> int:
        """The id of special-token `role`, or a clear error saying where the role is named."""
        i = self._role(role)
        if i is not None:
            return i
        where = getattr(self, "directory", None) or "the tokenizer"
        if self.meta.get("source") == "hf":
            raise ConfigError(f"{where}: the tokenizer has no {role} token ({role}_token in tokenizer_config.json or "
                              f"special_tokens_map.json); {purpose} needs one: set \"{role}_token\" in the Hugging "
                              "Face directory's tokenizer_config.json and run `lmlab hf import` again")
        raise ConfigError(f"{where}: the tokenizer has no {role} token; {purpose} needs one: train a tokenizer "
                          f"with one (`lmlab tokenizer train ... --special_tokens.{role}=TOKEN`)")

    def save(self, directory: str | Path, overwrite: bool = False) -> None:
        """Copy the tokenizer files into a new artifact directory (same kind and manifest)."""
        src = getattr(self, "directory", None)
        if src is None:
            raise ArtifactError("only a tokenizer loaded from a directory can be saved; make one with "
                                "`lmlab tokenizer train` or `lmlab hf import`")
        with ArtifactWriter(directory, kind=KIND, overwrite=overwrite) as w:
            for name in FILES + ("config.yaml",):
                if (src / name).exists():
                    shutil.copy2(src / name, w.path / name)

    def write(self, directory: Path) -> None:
        """tokenizer.json (+ target_tokenizer.json) and lmlab_tokenizer.json into `directory`, an
        artifact being written (`lmlab hf import` of Hugging Face files alone)."""
        self.backend.save(str(directory / "tokenizer.json"))
        if self.target_backend is not None:
            self.target_backend.save(str(directory / TARGET_FILE))
        write_json(directory / "lmlab_tokenizer.json", self.meta)

    @property
    def fingerprint(self) -> str:
        """sha256 of the serialised pipeline(s): shards record it to refuse a different tokenizer."""
        text = self.backend.to_str() + (self.target_backend.to_str() if self.target_backend is not None else "")
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.backend.id_to_token(i)

    def _role(self, role: str) -> int | None:
        return self.special_ids.get(role)

    pad_id = property(lambda self: self._role("pad"))
    unk_id = property(lambda self: self._role("unk"))
    bos_id = property(lambda self: self._role("bos"))
    eos_id = property(lambda self: self._role("eos"))
    cls_id = property(lambda self: self._role("cls"))
    sep_id = property(lambda self: self._role("sep"))
    mask_id = property(lambda self: self._role("mask"))

    @property
    def document_separator_id(self) -> int | None:
        """The id appended after each document in token shards: eos, else sep."""
        return self.eos_id if self.eos_id is not None else self.sep_id

    # ------------------------------------------------------------------ encode / decode
    def limit_word_cache(self, words: int) -> None:
        """Keep at most `words` words in the tokenizer model's cache of word → tokens (BPE and Unigram;
        the Rust library's default is 10,000, and WordPiece has none).

        The cache stores the first words it meets and keeps them for good. A server meets any text a
        client sends, so its cache would fill with whatever came first. For a byte-level BPE fed random
        text, a cached word costs ~32 B a character (up to 256): 81 MiB for 10,000 words of 250 letters,
        8 MiB for 1,000 (tests/unit/serve/test_memory.py). A small cache keeps the memory a
        served tokenizer can take small, and reached early."""
        for backend in (self.backend, self.target_backend):
            # an underscored method of tokenizers' models; a release without it keeps its own cache
            resize = getattr(getattr(backend, "model", None), "_resize_cache", None)
            if resize is not None:
                resize(words)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        """Encode many texts on all cores (the Rust library's thread pool), without offsets."""
        return _encode_batch(self.backend, texts, add_special_tokens)

    def encode_target(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Ids of an encoder–decoder's target-side text (Marian: target.spm's segmentation)."""
        return (self.target_backend or self.backend).encode(text, add_special_tokens=add_special_tokens).ids

    def encode_target_batch(self, texts: list[str], add_special_tokens: bool = False) -> list[list[int]]:
        return _encode_batch(self.target_backend or self.backend, texts, add_special_tokens)

    @functools.cached_property
    def template(self) -> tuple[list[int], list[int]]:
        """The ids that ``encode(text, add_special_tokens=True)`` puts before and after one text's own
        ids: ([CLS], [SEP]) for BERT, ([], [</s>]) for Marian, ([], []) for byte-level BPE."""
        plain = self.backend.encode("a", add_special_tokens=False).ids
        full = self.backend.encode("a", add_special_tokens=True).ids
        for k in range(len(full) - len(plain) + 1):
            if full[k:k + len(plain)] == plain:
                return full[:k], full[k + len(plain):]
        raise ArtifactError(f"{getattr(self, 'directory', 'the tokenizer')}: its post-processor changes the text's "
                            "own ids; lmlab cannot tell what it adds around them")

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def stream_decoder(self) -> "Any":
        from lmlab.tokenizer.stream import StreamDecoder

        return StreamDecoder(self)

    def iter_decode(self, ids: Iterator[int]) -> Iterator[str]:
        """Text pieces as ids arrive; never half a UTF-8 character."""
        dec = self.stream_decoder()
        for i in ids:
            piece = dec.push(i)
            if piece:
                yield piece
        tail = dec.flush()
        if tail:
            yield tail

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size}, specials={self.special_tokens})"


def _encode_batch(backend: Any, texts: list[str], add_special_tokens: bool) -> list[list[int]]:
    fast = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [e.ids for e in fast(texts, add_special_tokens=add_special_tokens)]


def load_tokenizer(directory: str | Path) -> Tokenizer:
    return Tokenizer.load(directory)


def _parse_ids(ids: str) -> list[int]:
    text = ids.strip()
    try:
        values = json.loads(text) if text.startswith("[") else [int(x) for x in text.replace(",", " ").split()]
    except (ValueError, json.JSONDecodeError):
        raise ArtifactError(f"ids {ids[:50]!r}: give integers separated by spaces or commas, or a JSON list") from None
    return [int(v) for v in values]


def encode_command(tokenizer: str, text: str | None = None, file: str | None = None,
                   special: bool = False) -> dict[str, Any]:
    """CLI: ids (and tokens) of TEXT, or of each line of FILE."""
    tok = Tokenizer.load(tokenizer)
    if (text is None) == (file is None):
        raise ArtifactError("tokenizer encode: give exactly one of TEXT or --file")
    if text is not None:
        ids = tok.encode(text, add_special_tokens=special)
        return {"ids": ids, "tokens": [tok.id_to_token(i) for i in ids]}
    from lmlab.corpus.read import open_text_lines

    return {"ids": [tok.encode(line.rstrip("\n"), add_special_tokens=special) for line in open_text_lines(file)]}  # type: ignore[arg-type]


def decode_command(tokenizer: str, ids: str, skip_special: bool = False) -> str:
    """CLI: the text of IDS ("1 2 3", "1,2,3" or "[1, 2, 3]")."""
    tok = Tokenizer.load(tokenizer)
    values = _parse_ids(ids)
    bad = [i for i in values if not 0 <= i < tok.vocab_size]
    if bad:
        raise ArtifactError(f"ids {bad[:5]} are outside the vocabulary (size {tok.vocab_size})")
    return tok.decode(values, skip_special_tokens=skip_special)
