"""A Marian checkpoint (Helsinki-NLP/opus-mt-* layout) from its Hugging Face files alone: `lmlab hf
import` turns source.spm / target.spm / vocab.json into tokenizer.json + target_tokenizer.json whose
ids and decoding are transformers' MarianTokenizer's, and the imported model translates, fine-tunes,
evaluates and exports. Oracles: sentencepiece itself, MarianTokenizer, MarianMTModel (greedy
`generate`, the teacher-forced loss)."""

import json
import re
import shutil

import httpx
import pytest
import torch

from lmlab.cli import main
from lmlab.errors import ArtifactCorrupt, ConfigError
from lmlab.hf.convert import export_hf, import_hf
from lmlab.tokenizer.tokenizer import Tokenizer

from .conftest import ALPHABET, fixture_lines, fixture_texts, train_spm, transformers

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")  # MarianTokenizer's

TINY = ["--train.progress=false", "--train.threads=1", "--train.batch_size=3", "--optim.warmup_steps=1",
        "--optim.lr=1e-3", "--train.precision=fp32", "--train.eval_every_steps=100", "--task.max_length=40",
        "--task.seq2seq.max_target_length=12"]

# Text that stresses the normaliser and the whitespace rules, with characters both models know
# (ALPHABET) or neither knows (emoji, snowman, é, half-width katakana, Ω, the fraction slash of ½).
EDGE = ["", " ", "x", "   padded   text   ", "a  b", "trailing space ", " leading space", "tabs\tand\nnew lines",
        "ＦＵＬＬ ｗｉｄｔｈ ｔｅｘｔ", "ﬁne ligature", "UPPER CASE SENTENCE!", "numbers 12345 and 3.14",
        "quotes \"double\" and 'single'", "(brackets) [and] {braces} <angle>", "path/to/file_name-2.txt",
        "email@example.com #tag $5 %", "~tilde | pipe \\ back ^ caret `tick`", ">>deu<< A short sentence.",
        ">>nld<<no space after the code", "the </s> inside", "a <unk> b", "<pad>", "mixed 中文 and English",
        "emoji 😀 here", "☃☃ two snowmen", "½ cup", "café au lait", "ｶﾀｶﾅ half width", "Ω ohm",
        "zero\u200bwidth space", "▁meta symbol", "a▁b", ALPHABET]


def sentences() -> list[str]:
    return fixture_lines("text/mixed.txt") + fixture_texts() + EDGE


@pytest.fixture(scope="module")
def imported(hf_marian, tmp_path_factory):
    out = tmp_path_factory.mktemp("imported") / "opus-mt"
    return out, import_hf(hf_marian, out)


@pytest.fixture(scope="module")
def reference(hf_marian):
    return transformers.MarianTokenizer.from_pretrained(hf_marian)


def test_spm_files_read_as_sentencepiece_reads_them(hf_marian, tmp_path):
    import sentencepiece

    from lmlab.tokenizer.sentencepiece_model import CONTROL, UNKNOWN, read_sentencepiece_model

    for name in ("source.spm", "target.spm"):
        ours = read_sentencepiece_model(hf_marian / name)
        sp = sentencepiece.SentencePieceProcessor(model_file=str(hf_marian / name))
        assert len(ours.pieces) == sp.get_piece_size()
        for i, p in enumerate(ours.pieces):
            assert (p.piece, p.score) == (sp.id_to_piece(i), sp.get_score(i))
            assert (p.type == CONTROL, p.type == UNKNOWN) == (sp.is_control(i), sp.is_unknown(i))
        assert (ours.model_type, ours.unk_id, ours.normalizer) == ("unigram", sp.unk_id(), "nmt_nfkc")
        assert ours.add_dummy_prefix and ours.remove_extra_whitespaces and len(ours.precompiled_charsmap) > 1000
    data = (hf_marian / "source.spm").read_bytes()
    for bad in (data[: len(data) // 2], b"\x0a\xff\xff\xff\xff\x0f", b"not a model"):
        (tmp_path / "bad.spm").write_bytes(bad)
        with pytest.raises(ArtifactCorrupt, match=r"bad\.spm: not a SentencePiece model"):
            read_sentencepiece_model(tmp_path / "bad.spm")


def test_import_writes_a_source_and_a_target_tokenizer(imported, hf_marian):
    out, summary = imported
    tok = summary["tokenizer"]
    vocab = json.loads((hf_marian / "vocab.json").read_text(encoding="utf-8"))
    assert tok["special_tokens"] == {"unk": "<unk>", "eos": "</s>", "pad": "<pad>"}
    assert tok["vocab_size"] == len(vocab) and tok["pieces_not_in_vocab"] == {"source.spm": 0, "target.spm": 0}
    assert {"tokenizer.json", "target_tokenizer.json", "lmlab_tokenizer.json", "source.spm", "target.spm",
            "vocab.json"} <= set(tok["files"])
    loaded = Tokenizer.load(out / "tokenizer", verify_hashes=False)
    assert loaded.target_backend is not None and loaded.template == ([], [vocab["</s>"]])
    assert (loaded.pad_id, loaded.eos_id, loaded.unk_id) == (vocab["<pad>"], vocab["</s>"], vocab["<unk>"])


def test_ids_and_decoding_equal_marian_tokenizer(imported, reference):
    """~250 texts on the source side (source.spm) and ~280 on the target side (target.spm,
    ``text_target``): equal ids with </s>, equal decoding, and the text back where MarianTokenizer
    gives it back."""
    tok = Tokenizer.load(imported[0] / "tokenizer", verify_hashes=False)
    german = fixture_lines("tasks/mt_train.de")[:30]
    round_trips = 0
    for side, texts in (("source", sentences()), ("target", sentences() + german)):
        for text in texts:
            want = reference(text_target=text) if side == "target" else reference(text)
            got = tok.encode_target(text, True) if side == "target" else tok.encode(text, True)
            assert got == want["input_ids"], (side, text)
            decoded = tok.decode(got, skip_special_tokens=True)
            assert decoded == reference.decode(got, skip_special_tokens=True), (side, text)
            round_trips += decoded == text
    assert tok.encode_batch(sentences()[:9], True) == [tok.encode(t, True) for t in sentences()[:9]]
    assert round_trips > 400  # every fixture sentence; not the edge cases that normalisation changes


def test_known_differences_from_marian_tokenizer_are_pinned(imported, reference):
    """Text a side's model does not know: source.spm lacks "ü" (only German, the target side, has it);
    SentencePiece makes it an unknown piece, which MarianTokenizer looks up in vocab.json and finds
    target.spm's "ü" — lmlab keeps <unk>. A language code is a token anywhere in lmlab's text,
    only at its start in MarianTokenizer's."""
    tok = Tokenizer.load(imported[0] / "tokenizer", verify_hashes=False)
    vocab, unk = reference.get_vocab(), reference.unk_token_id
    want = reference("fünf")["input_ids"]
    assert vocab["ü"] in want and tok.encode("fünf", True) == [unk if i == vocab["ü"] else i for i in want]
    assert tok.encode_target("fünf", True) == reference(text_target="fünf")["input_ids"]
    assert vocab[">>deu<<"] in tok.encode("hello >>deu<< world")
    assert vocab[">>deu<<"] not in reference("hello >>deu<< world")["input_ids"]


def test_truncated_sources_keep_their_end_token_as_marian_tokenizer_does(imported, reference):
    from lmlab.tasks.translation import TASK

    tok = Tokenizer.load(imported[0] / "tokenizer", verify_hashes=False)
    texts = fixture_texts()[:20]
    ids, cut = TASK.sources(tok, texts, 7)
    assert ids == reference(texts, truncation=True, max_length=7)["input_ids"]
    assert any(cut) and all(len(x) <= 7 and x[-1] == tok.eos_id for x in ids)


def hf_greedy(model, reference, texts: list[str], n: int) -> list[list[int]]:
    """transformers' greedy generate (the checkpoint's generation_config, one beam, no forced </s> at
    the length limit): each row's tokens after the decoder start, up to and with its first </s>."""
    inputs = reference(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**inputs, num_beams=1, do_sample=False, max_new_tokens=n, forced_eos_token_id=None)
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(0) + 1] if 0 in row else row)
    return rows


def test_imported_marian_translates_as_transformers_greedy(imported, hf_marian, reference, capsys):
    from lmlab.generate import DecodeLoop, GenerationConfig, load_for_generation

    texts = fixture_lines("tasks/mt_dev.en")[:4] + ["the film was delightful", ">>deu<< a short sentence ."]
    hf = transformers.MarianMTModel.from_pretrained(hf_marian).eval()
    want = hf_greedy(hf, reference, texts, 12)
    assert len({len(r) for r in want}) > 1 and any(r[-1] == 0 for r in want)  # rows end at different steps
    model, tok = load_for_generation(imported[0])
    ids = tok.encode_batch(texts, add_special_tokens=True)
    loop = DecodeLoop(model, ids, GenerationConfig(temperature=0, max_new_tokens=12), [[tok.eos_id]] * len(texts),
                      pad_id=tok.pad_id, vocab_limit=tok.vocab_size)
    list(loop)
    assert loop.generated == want
    # the text commands, from the imported directory alone
    assert main(["predict", "translation", str(imported[0]), texts[0], "--task.seq2seq.max_target_length=12"]) == 0
    assert json.loads(capsys.readouterr().out)["translation"] == reference.decode(want[0], skip_special_tokens=True)
    assert main(["generate", str(imported[0]), "--prompt", texts[1], "--temperature", "0",
                 "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out.strip() == reference.decode(want[1], skip_special_tokens=True)
    from lmlab.serve.registry import Registry
    from tests.unit.serve.conftest import live_server

    with live_server(Registry.load([f"mt={imported[0]}"])) as (url, _):
        r = httpx.post(f"{url}/v1/translate", json={"model": "mt", "text": texts[2]}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["result"]["translation"] == reference.decode(want[2], skip_special_tokens=True)



def test_the_pad_token_is_never_generated_as_the_checkpoint_bans_it(hf_marian, reference, tmp_path):
    """opus-mt's generation_config bans <pad> (bad_words_ids); a checkpoint whose output bias favours
    it gives the same greedy and beam translations in transformers and lmlab, with no <pad> in them."""
    from safetensors.torch import load_file, save_file

    from lmlab.generate import DecodeLoop, GenerationConfig, load_for_generation
    from lmlab.generate.beam import beam_search

    bare = copy_of(hf_marian, tmp_path)
    weights = load_file(bare / "model.safetensors")
    pad = reference.pad_token_id
    weights["final_logits_bias"][0, pad] += 30.0  # without the ban every step would choose <pad>
    save_file(weights, bare / "model.safetensors", metadata={"format": "pt"})
    texts = fixture_lines("tasks/mt_dev.en")[:3]
    hf = transformers.MarianMTModel.from_pretrained(bare).eval()
    want = hf_greedy(hf, reference, texts, 8)
    assert all(pad not in r for r in want)
    import_hf(bare, tmp_path / "mt")
    model, tok = load_for_generation(tmp_path / "mt")
    ids = tok.encode_batch(texts, add_special_tokens=True)
    loop = DecodeLoop(model, ids, GenerationConfig(temperature=0, max_new_tokens=8), [[tok.eos_id]] * len(texts),
                      pad_id=tok.pad_id, vocab_limit=tok.vocab_size)
    list(loop)
    assert loop.generated == want
    inputs = reference(texts[:1], return_tensors="pt")
    with torch.no_grad():
        beams = hf.generate(**inputs, num_beams=3, do_sample=False, max_new_tokens=8, forced_eos_token_id=None,
                            length_penalty=1.0, early_stopping=False)[0, 1:].tolist()
    best = beam_search(model, ids[:1], GenerationConfig(num_beams=3, max_new_tokens=8), [tok.eos_id],
                       pad_id=tok.pad_id, vocab_limit=tok.vocab_size)[0].token_ids
    assert pad not in best and best == [t for t in beams if t != pad]


def test_finetune_translation_from_imported_marian(hf_marian, reference, tmp_path, capsys):
    """The teacher-forced batch is transformers' (sources + </s>, labels from target.spm + </s>, the
    decoder started from <pad>) with an equal loss; a few steps of `lmlab finetune translation
    --init hf:DIR`, then predict, evaluate and export back to MarianMTModel + MarianTokenizer."""
    from lmlab.model import load_model
    from lmlab.tasks.task import TaskConfig
    from lmlab.tasks.translation import TASK

    out = tmp_path / "imported"
    import_hf(hf_marian, out)
    tok = Tokenizer.load(out / "tokenizer", verify_hashes=False)
    src, tgt = fixture_lines("tasks/mt_train.en")[:5], fixture_lines("tasks/mt_train.de")[:5]
    pairs = TASK.read(_pair_files(tmp_path, src, tgt), TaskConfig())
    feats = TASK.features(pairs, tok, {}, TaskConfig(max_length=40))
    batch = reference(src, text_target=tgt)
    assert [f["input_ids"] for f in feats] == batch["input_ids"]
    assert [f["target_ids"] for f in feats] == batch["labels"]
    prepared = TASK.objective(tok, {}, TaskConfig()).prepare(feats, 0).inputs
    hf = transformers.MarianMTModel.from_pretrained(hf_marian).eval()
    with torch.no_grad():
        theirs = hf(input_ids=prepared["input_ids"], attention_mask=prepared["attention_mask"],
                    labels=prepared["labels"]).loss
        ours = load_model(out).eval()(**prepared).loss
    assert abs(float(ours) - float(theirs)) < 1e-5

    train = _pair_files(tmp_path, fixture_lines("tasks/mt_train.en")[:12], fixture_lines("tasks/mt_train.de")[:12])
    dev = _pair_files(tmp_path, fixture_lines("tasks/mt_dev.en")[:4], fixture_lines("tasks/mt_dev.de")[:4], "dev")
    run = tmp_path / "run"
    assert main(["finetune", "translation", "--init", f"hf:{hf_marian}", "--train", train, "--eval", dev,
                 "--out", str(run), *TINY, "--train.max_steps=3"]) == 0
    assert (run / "model" / "tokenizer" / "target_tokenizer.json").is_file()
    capsys.readouterr()
    assert main(["predict", "translation", str(run), "two three"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["translation"], str)
    assert main(["evaluate", "translation", str(run), "--data", dev]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["bleu"] <= 100
    export_hf(run, tmp_path / "hf-out")
    again = transformers.MarianTokenizer.from_pretrained(tmp_path / "hf-out")
    assert again(src, text_target=tgt)["labels"] == batch["labels"]
    back = transformers.MarianMTModel.from_pretrained(tmp_path / "hf-out").eval()
    pad, eos = tok.special_ids["pad"], tok.special_ids["eos"]
    gen = back.generation_config  # transformers' generate decodes as lmlab does
    assert (gen.decoder_start_token_id, gen.eos_token_id, gen.bad_words_ids) == (pad, eos, [[pad]])
    with torch.no_grad():
        ref = back(input_ids=prepared["input_ids"], attention_mask=prepared["attention_mask"],
                   decoder_input_ids=prepared["decoder_input_ids"]).logits
        got = load_model(run).eval()(**{k: v for k, v in prepared.items() if k != "labels"}).logits
    real = prepared["decoder_attention_mask"].bool()  # [B, T']: the padded steps predict nothing
    assert (ref - got)[real].abs().max() <= 1e-4


def _pair_files(tmp_path, src: list[str], tgt: list[str], name: str = "train") -> str:
    (tmp_path / f"{name}.en").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / f"{name}.de").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return f"{tmp_path / f'{name}.en'},{tmp_path / f'{name}.de'}"


def copy_of(hf_marian, tmp_path):
    bare = tmp_path / "hf"
    shutil.copytree(hf_marian, bare)
    return bare


def test_a_sentencepiece_model_lmlab_cannot_convert_is_named(hf_marian, tmp_path):
    bare = copy_of(hf_marian, tmp_path)
    (bare / "source.spm").write_bytes(train_spm(fixture_texts() + [ALPHABET], 150, model_type="bpe"))
    summary = import_hf(bare, tmp_path / "mt")["tokenizer"]
    assert summary["readable"] is False
    assert "source.spm: trainer_spec.model_type is bpe; lmlab converts Marian's SentencePiece unigram" in \
        summary["reason"]


@pytest.mark.parametrize("edit, error", [
    (lambda d: (d / "vocab.json").write_text('{"</s>": 0, "<unk>": 0}'), r"vocab\.json: '<unk>' has id 0"),
    (lambda d: _edit_json(d / "config.json", decoder_start_token_id=0),
     r"config\.json: decoder_start_token_id 0 differs from pad_token_id"),
    (lambda d: _edit_json(d / "tokenizer_config.json", pad_token="<unk>"),
     r"config\.json: pad_token_id is \d+ but the tokenizer's pad token \('<unk>'"),
])
def test_inconsistent_marian_files_are_refused_by_name(hf_marian, tmp_path, edit, error):
    bare = copy_of(hf_marian, tmp_path)
    edit(bare)
    try:
        summary = import_hf(bare, tmp_path / "mt")
    except (ConfigError, ArtifactCorrupt) as e:
        assert re.search(error, str(e)), str(e)
        return
    assert summary["tokenizer"]["readable"] is False and re.search(error, summary["tokenizer"]["reason"])


def _edit_json(path, **fields):
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))
