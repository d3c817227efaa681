"""Training, Hugging Face compatibility (identical ids), round trips, special tokens."""

import json
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.errors import ArtifactCorrupt, DataError
from lmlab.tokenizer.tokenizer import Tokenizer
from lmlab.tokenizer.train import train_tokenizer

from .conftest import FIXTURE, SIZES

transformers = pytest.importorskip("transformers")

HARD = [
    "The old sailor reads a long letter.",
    "我们喜欢明亮的月光，心里很高兴。",
    "family 👨‍👩‍👧 and 👩🏽‍💻 emoji with ZWJ",
    "combining e\u0301 and a\u0308 marks; precomposed é",
    "RTL: שלום עולם and مرحبا بالعالم",
    "tabs\tand  double  spaces\nnew line",
    "",
]


@pytest.mark.parametrize("kind", ["bpe", "wordpiece", "unigram", "char"])
def test_autotokenizer_gives_identical_ids(trained, kind):
    tok = Tokenizer.load(trained[kind])
    hf = transformers.AutoTokenizer.from_pretrained(str(trained[kind]))
    for text in HARD:
        assert tok.encode(text) == hf.encode(text, add_special_tokens=False), text
        assert tok.encode(text, add_special_tokens=True) == hf.encode(text), text
        assert tok.decode(tok.encode(text)) == hf.decode(hf.encode(text, add_special_tokens=False))
    files = {p.name for p in trained[kind].iterdir()}
    assert {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "manifest.json"} <= files


def test_wordpiece_vocab_txt_for_bert_tokenizer(trained):
    tok = Tokenizer.load(trained["wordpiece"])
    vocab = (trained["wordpiece"] / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert len(vocab) == tok.vocab_size and all(tok.token_to_id(t) == i for i, t in enumerate(vocab))
    bert = transformers.BertTokenizer(str(trained["wordpiece"] / "vocab.txt"), do_lower_case=False)
    for text in HARD:  # vocab.txt alone means BERT's normaliser without NFKC: equal on NFKC-normal text
        nfkc = unicodedata.normalize("NFKC", text)
        assert bert.encode(nfkc) == tok.encode(nfkc, add_special_tokens=True) == tok.encode(text, True), text
    ids = tok.encode("我们喜欢月光", add_special_tokens=True)
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id
    assert [tok.id_to_token(i) for i in ids[1:-1]] == list("我们喜欢月光")  # one token per CJK character


def test_special_tokens_come_first_with_roles(trained):
    bpe = Tokenizer.load(trained["bpe"])
    assert (bpe.eos_id, bpe.pad_id, bpe.unk_id, bpe.document_separator_id) == (0, 1, None, 0)
    wp = Tokenizer.load(trained["wordpiece"])
    assert [wp.pad_id, wp.unk_id, wp.cls_id, wp.sep_id, wp.mask_id] == [0, 1, 2, 3, 4]
    assert wp.document_separator_id == wp.sep_id
    cfg = json.loads((trained["wordpiece"] / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and cfg["mask_token"] == "[MASK]"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_bpe_round_trip_is_exact_on_any_text(trained_bpe, text):
    assert trained_bpe.decode(trained_bpe.encode(text)) == text


@pytest.fixture(scope="module")
def trained_bpe(trained):
    return Tokenizer.load(trained["bpe"])


def test_char_round_trip_and_unknowns(trained):
    tok = Tokenizer.load(trained["char"])
    line = FIXTURE.read_text(encoding="utf-8").splitlines()[2]
    assert tok.decode(tok.encode(line)) == line
    assert len(tok.encode(line)) == len(line)  # one id per character
    assert tok.encode("\u2603") == [tok.unk_id]


def test_unigram_round_trip_on_training_text(trained):
    tok = Tokenizer.load(trained["unigram"])
    for line in FIXTURE.read_text(encoding="utf-8").splitlines()[:30]:
        assert tok.decode(tok.encode(line)) == unicodedata.normalize("NFKC", line)  # (TokenizerConfig.nfkc)


def test_vocab_size_is_respected(trained):
    for kind in ("bpe", "unigram"):
        assert Tokenizer.load(trained[kind]).vocab_size <= {"bpe": 400, "unigram": 250}[kind]


def test_modified_tokenizer_json_is_detected(trained, tmp_path):
    import shutil
    d = tmp_path / "t"
    shutil.copytree(trained["char"], d)
    (d / "tokenizer.json").write_text((d / "tokenizer.json").read_text().replace("<unk>", "<unK>"))
    with pytest.raises(ArtifactCorrupt, match="tokenizer.json"):
        Tokenizer.load(d)


def test_unigram_too_small_vocab_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="raise --vocab-size"):
        train_tokenizer(FIXTURE, tmp_path / "u", kind="unigram", vocab_size=20)
    assert not (tmp_path / "u").exists()


def test_save_copies_a_loaded_tokenizer(trained, tmp_path):
    tok = Tokenizer.load(trained["bpe"])
    tok.save(tmp_path / "copy")
    again = Tokenizer.load(tmp_path / "copy")
    assert again.fingerprint == tok.fingerprint and again.encode("hello") == tok.encode("hello")


@pytest.mark.parametrize("kind", sorted(SIZES))
def test_template_is_what_special_tokens_add_around_a_text(trained, kind):
    """What an encoder–decoder's source gets around its ids (`Seq2SeqTask.sources` keeps it when
    truncating): [CLS] … [SEP] for WordPiece, nothing for lmlab's other kinds."""
    tok = Tokenizer.load(trained[kind])
    before, after = tok.template
    assert (before, after) == (([tok.cls_id], [tok.sep_id]) if kind == "wordpiece" else ([], []))
    for text in ("hello world", "你好, world", "x"):
        assert before + tok.encode(text) + after == tok.encode(text, add_special_tokens=True)


def test_uncased_wordpiece_matches_bert_uncased(tmp_path):
    train_tokenizer(FIXTURE, tmp_path / "wpl", kind="wordpiece", vocab_size=800,
                    overrides=["--lowercase=true", "--min_frequency=1"])
    tok = Tokenizer.load(tmp_path / "wpl")
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "wpl"))
    bert = transformers.BertTokenizer(str(tmp_path / "wpl" / "vocab.txt"), do_lower_case=True)
    for text in HARD + ["The OLD Sailor Café naïve ÀÉ"]:
        ids = tok.encode(text, add_special_tokens=True)
        assert ids == auto.encode(text) == bert.encode(unicodedata.normalize("NFKC", text)), text
    assert tok.decode(tok.encode("Café")) == "cafe"  # uncased BERT strips accents


def test_wordpiece_meets_raw_text_as_its_clean_training_text(tmp_path):
    """The corpus stage trains on NFKC text: full-width punctuation and digits at fine-tuning time
    must not be [UNK] (they were, before the tokenizer applied NFKC itself); offsets still index
    the raw string. The default alphabet covers a Chinese corpus's characters, not a quarter of
    the vocabulary."""
    rare = "".join(chr(0x4E00 + i) for i in range(150))  # 150 distinct characters, each seen 3 times
    text = "我们喜欢月光, 心里很高兴(1999)。\n" * 10 + (rare + "\n") * 3
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    train_tokenizer(tmp_path / "c.txt", tmp_path / "t", kind="wordpiece", vocab_size=400)
    tok = Tokenizer.load(tmp_path / "t")
    raw = "我们喜欢月光，心里很高兴（１９９９）。"
    enc = tok.backend.encode(raw, add_special_tokens=False)
    assert tok.unk_id not in enc.ids and enc.ids == tok.encode("我们喜欢月光, 心里很高兴(1999)。")
    assert [raw[s:e] for s, e in enc.offsets][6:8] == ["，", "心"]
    assert tok.unk_id not in tok.encode(rare)  # vocab_size // 4 = 100 characters would have cut them
    distinct = len(set(text) - {" ", "\n"})
    assert 100 < distinct < 200  # 99.95 % coverage needs them all, within [400 // 4, 400 // 2]
    assert f"limit_alphabet: {distinct}\n" in (tmp_path / "t" / "config.yaml").read_text()  # resolved, written
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "t"))
    assert auto.encode(raw, add_special_tokens=False) == enc.ids


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("北京欢迎你的人们是了在中国 abc,.。！") + ["𠀀"]), max_size=40))
def test_bpe_split_cjk_keeps_every_piece_inside_one_character(split_cjk_bpe, text):
    """With split_cjk a piece never spans two CJK characters (nor a character and its
    neighbour), and the round trip stays exact."""
    tok = Tokenizer.load(split_cjk_bpe)
    enc = tok.backend.encode(text, add_special_tokens=False)
    assert tok.decode(enc.ids) == text
    for s, e in enc.offsets:
        piece = text[s:e]
        assert len(piece) == 1 or not re.search(r"[\u4e00-\u9fff\U00020000-\U0002fa1f]", piece), piece


def test_bpe_split_cjk_learns_characters_not_words(split_cjk_bpe, trained):
    text = FIXTURE.read_text(encoding="utf-8")

    def widest(directory) -> int:  # CJK characters in the longest piece
        enc = Tokenizer.load(directory).backend.encode(text, add_special_tokens=False)
        return max(len(re.findall(r"[\u4e00-\u9fff]", text[s:e])) for s, e in enc.offsets)
    assert widest(split_cjk_bpe) == 1 and widest(trained["bpe"]) > 1


@pytest.fixture(scope="module")
def split_cjk_bpe(tmp_path_factory):
    out = tmp_path_factory.mktemp("split") / "bpe"
    train_tokenizer(FIXTURE, out, kind="bpe", vocab_size=400, overrides=["--min_frequency=1", "--split_cjk=true"])
    return out
