"""Token shards: dtype choice and guard, round trip, corruption detection, resume, tokenizer mismatch."""

import json
from pathlib import Path

import numpy as np
import pytest

from lmlab.corpus.pipeline import clean_corpus
from lmlab.data import shards as shards_mod
from lmlab.data.shards import TokenShards, choose_dtype, shard_corpus
from lmlab.errors import ArtifactCorrupt, ArtifactError, ConfigError
from lmlab.tokenizer.tokenizer import Tokenizer
from lmlab.tokenizer.train import train_tokenizer

FIXTURE = Path(__file__).parents[2] / "fixtures" / "text" / "mixed.txt"


@pytest.fixture(scope="module")
def corpus_and_tok(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    clean_corpus([FIXTURE], root / "corpus", overrides=["--split.valid=0.2", "--shard_bytes=3000"])
    train_tokenizer(root / "corpus", root / "bpe", kind="bpe", vocab_size=300, overrides=["--min_frequency=1"])
    train_tokenizer(root / "corpus", root / "wp", kind="wordpiece", vocab_size=800, overrides=["--min_frequency=1"])
    return root


def test_choose_dtype():
    assert choose_dtype(65536) == np.uint16 and choose_dtype(65537) == np.uint32
    assert choose_dtype(100, "uint32") == np.uint32
    with pytest.raises(ConfigError, match="uint16 cannot hold"):
        choose_dtype(65537, "uint16")


def test_round_trip_documents_and_separators(corpus_and_tok, tmp_path):
    root = corpus_and_tok
    summary = shard_corpus(root / "corpus", root / "bpe", tmp_path / "s")
    tok = Tokenizer.load(root / "bpe")
    train = TokenShards(tmp_path / "s", "train", tokenizer=tok)
    assert train.dtype == np.uint16 and len(train.shards) >= 2
    docs = [json.loads(line)["text"] for f in sorted((root / "corpus").glob("train-*.jsonl"))
            for line in f.read_text().splitlines()]
    assert train.num_documents == len(docs) == summary["splits"]["train"]["documents"]
    for i in (0, len(docs) // 2, len(docs) - 1):
        ids = train.document(i)
        assert ids[-1] == tok.eos_id and tok.decode(ids[:-1].tolist()) == docs[i]
    assert train.num_tokens == sum(len(tok.encode(d)) + 1 for d in docs)
    valid = TokenShards(tmp_path / "s", "valid")
    assert valid.num_documents > 0
    assert (tmp_path / "s" / "tokenizer" / "tokenizer.json").exists()


def test_large_vocab_uses_uint32_and_forcing_uint16_is_refused(tmp_path):
    # a char vocabulary of 70,304 CJK code points (> 65,536) + specials
    chars = [chr(c) for r in ((0x4E00, 0xA000), (0x3400, 0x4DC0), (0x20000, 0x2A6E0)) for c in range(*r)]
    text = tmp_path / "chars.txt"
    text.write_text("\n".join("".join(chars[i:i + 500]) for i in range(0, len(chars), 500)) + "\n", encoding="utf-8")
    train_tokenizer(text, tmp_path / "tok", kind="char", vocab_size=80_000, overrides=["--min_frequency=1"])
    tok = Tokenizer.load(tmp_path / "tok")
    assert tok.vocab_size > 65536
    with pytest.raises(ConfigError, match="uint16 cannot hold"):
        shard_corpus(text, tmp_path / "tok", tmp_path / "s16", overrides=["--shard.dtype=uint16"])
    assert not (tmp_path / "s16").exists()
    shard_corpus(text, tmp_path / "tok", tmp_path / "s")
    s = TokenShards(tmp_path / "s")
    assert s.dtype == np.uint32
    ids = s.document(0)[:-1].tolist()
    assert ids == tok.encode("".join(chars[:500])) and max(np.asarray(s.shards[0])) > 65535


def test_truncated_shard_and_bad_manifest_are_named(corpus_and_tok, tmp_path):
    root = corpus_and_tok
    shard_corpus(root / "corpus", root / "bpe", tmp_path / "s")
    bin0 = tmp_path / "s" / "train" / "00000.bin"
    data = bin0.read_bytes()
    bin0.write_bytes(data[:-3])
    with pytest.raises(ArtifactCorrupt, match=r"train/00000.bin: \d+ bytes, the manifest says"):
        TokenShards(tmp_path / "s")
    bin0.write_bytes(data)
    TokenShards(tmp_path / "s", verify_hashes=True)
    m = json.loads((tmp_path / "s" / "manifest.json").read_text())
    m["dtype"] = "float32"
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactCorrupt, match="not uint16 or uint32"):
        TokenShards(tmp_path / "s")


def test_a_zip_in_place_of_the_offsets_is_corrupt(corpus_and_tok, tmp_path):
    """np.load reads a zip (an .npz, or a torch .pt handed over as .idx: C1) lazily as an NpzFile."""
    import io
    import zipfile

    shard_corpus(corpus_and_tok / "corpus", corpus_and_tok / "bpe", tmp_path / "s")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("data.pkl", b"not offsets")
    (tmp_path / "s" / "train" / "00000.idx").write_bytes(buf.getvalue())
    with pytest.raises(ArtifactCorrupt, match=r"00000.idx: not a .npy offsets file"):
        TokenShards(tmp_path / "s")


def test_tokenizer_mismatch_is_refused(corpus_and_tok, tmp_path):
    root = corpus_and_tok
    shard_corpus(root / "corpus", root / "bpe", tmp_path / "s")
    with pytest.raises(ArtifactError, match="different tokenizer"):
        TokenShards(tmp_path / "s", tokenizer=root / "wp")


def test_interrupted_run_resumes_to_identical_output(corpus_and_tok, tmp_path, monkeypatch):
    root = corpus_and_tok
    shard_corpus(root / "corpus", root / "bpe", tmp_path / "ref")
    real = shards_mod._encode_unit
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # the run is killed while encoding its third unit
        return real(*a, **k)

    monkeypatch.setattr(shards_mod, "_encode_unit", dying)
    with pytest.raises(KeyboardInterrupt):
        shard_corpus(root / "corpus", root / "bpe", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(shards_mod, "_encode_unit", real)
    summary = shard_corpus(root / "corpus", root / "bpe", tmp_path / "out")
    assert summary["resumed_units"] == 2
    for f in sorted((tmp_path / "ref").rglob("*")):
        rel = f.relative_to(tmp_path / "ref")
        if f.is_file() and rel.name != "manifest.json":
            assert (tmp_path / "out" / rel).read_bytes() == f.read_bytes(), rel
    assert not list(tmp_path.glob(".out.partial*"))


def test_missing_split_is_named(corpus_and_tok, tmp_path):
    root = corpus_and_tok
    shard_corpus(root / "corpus", root / "bpe", tmp_path / "s")
    with pytest.raises(ArtifactError, match="no 'test' split; splits: train, valid"):
        TokenShards(tmp_path / "s", "test")


def test_corrupt_corpus_line_fails_or_is_skipped_and_counted(corpus_and_tok, tmp_path):
    """A damaged JSONL record — `fail` names file:line, `skip` counts exactly the injected ones."""
    import shutil as sh

    root = corpus_and_tok
    corpus = tmp_path / "corpus"
    sh.copytree(root / "corpus", corpus)
    shard0 = corpus / "train-00000.jsonl"
    lines = shard0.read_bytes().split(b"\n")
    lines[1] = b'{"text": broken'
    lines[3] = b'{"txt": "wrong key"}'
    lines[4] = b"\xff\xfe not utf-8"
    shard0.write_bytes(b"\n".join(lines))
    with pytest.raises(Exception, match=r"train-00000.jsonl:2: not a corpus record"):
        shard_corpus(corpus, root / "bpe", tmp_path / "s", overrides=["--shard.splits=[train]"])
    summary = shard_corpus(corpus, root / "bpe", tmp_path / "s2", overrides=["--shard.bad_rows=skip"])
    assert summary["splits"]["train"]["skipped_records"] == 3
