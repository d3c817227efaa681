"""An imported Hugging Face directory works with every command of its family from its own files:
`lmlab hf import` brings the tokenizer (tokenizer.json + the special-token roles of
tokenizer_config.json / special_tokens_map.json) into the lmlab layout."""

import json

import httpx
import pytest
import torch

from lmlab.cli import main
from lmlab.errors import ConfigError
from lmlab.hf.convert import export_hf, import_hf
from lmlab.tokenizer.tokenizer import Tokenizer

from .conftest import FIX, transformers

TINY = ["--train.progress=false", "--train.threads=1", "--train.batch_size=8", "--optim.warmup_steps=2",
        "--optim.lr=1e-3", "--train.precision=fp32", "--train.eval_every_steps=100", "--task.max_length=48"]


def test_gpt2_import_brings_its_tokenizer_and_roles(hf_gpt2, tmp_path):
    summary = import_hf(hf_gpt2, tmp_path / "lm")
    assert summary["tokenizer"]["special_tokens"] == {"bos": "<|endoftext|>", "eos": "<|endoftext|>",
                                                      "unk": "<|endoftext|>"}
    tok = Tokenizer.load(tmp_path / "lm" / "tokenizer")
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_gpt2)
    text = "the film was delightful, 非常好 !"
    assert tok.encode(text) == hf_tok(text, add_special_tokens=False)["input_ids"]
    assert tok.kind == "bpe" and tok.eos_id == hf_tok.eos_token_id and tok.pad_id is None


def test_imported_gpt2_generates_greedily_as_transformers_does(hf_gpt2, tmp_path, capsys):
    from lmlab.generate import GenerationConfig, generate, load_for_generation

    import_hf(hf_gpt2, tmp_path / "lm")
    assert main(["generate", str(tmp_path / "lm"), "--prompt", "the film", "--max-new-tokens", "6",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("the film")
    model, tok = load_for_generation(tmp_path / "lm")
    ours = generate(model, tok, "the film", GenerationConfig(max_new_tokens=6, temperature=0.0,
                                                              stop_token_ids=[])).token_ids
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2).eval()
    ids = torch.tensor([tok.encode("the film")])
    ref = hf.generate(ids, max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)[0, ids.shape[1]:]
    assert ours == ref.tolist()


def test_imported_gpt2_serves_a_completion_and_draws_attention(hf_gpt2, tmp_path):
    from lmlab.serve.registry import Registry
    from tests.unit.serve.conftest import live_server

    import_hf(hf_gpt2, tmp_path / "lm")
    with live_server(Registry.load([f"gpt={tmp_path / 'lm'}"])) as (url, _):
        r = httpx.post(f"{url}/v1/completions", json={"model": "gpt", "prompt": "the film", "max_tokens": 4,
                                                       "temperature": 0}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] >= 1
    assert main(["viz", "attention", str(tmp_path / "lm"), "--text", "a good film", "--out",
                 str(tmp_path / "viz")]) == 0
    assert len(json.loads((tmp_path / "viz" / "attention.json").read_text())["layers"]) == 2


def test_imported_bert_fine_tunes_predicts_evaluates_serves_and_exports(hf_bert, tmp_path, capsys):
    """BertModel → sentiment from hf:DIR; the run directory then serves every command; the task
    model exports to BertForSequenceClassification with equal logits."""
    from lmlab.serve.registry import Registry
    from tests.unit.serve.conftest import live_server

    train, dev = str(FIX / "sentiment_train.csv"), str(FIX / "sentiment_dev.csv")
    assert main(["finetune", "sentiment", "--train", train, "--eval", dev, "--init", f"hf:{hf_bert}",
                 "--out", str(tmp_path / "run"), *TINY, "--train.max_steps=6"]) == 0
    capsys.readouterr()
    assert main(["predict", "sentiment", str(tmp_path / "run"), "a wonderful film"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("0", "1")
    assert main(["evaluate", "sentiment", str(tmp_path / "run"), "--data", dev]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["accuracy"] <= 1
    with live_server(Registry.load([f"cls={tmp_path / 'run'}"])) as (url, _):
        r = httpx.post(f"{url}/v1/classify", json={"model": "cls", "text": "a dull film"}, timeout=60)
        assert r.status_code == 200, r.text
    export_hf(tmp_path / "run", tmp_path / "hf-out")
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf-out").eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf-out")
    inputs = hf_tok(["a dull film", "the film was delightful and the acting superb"], padding=True,
                    return_tensors="pt")
    inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
    from lmlab.model import load_model

    ours = load_model(tmp_path / "run")
    with torch.no_grad():
        ref = hf(**inputs).logits
        got = ours(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                   token_type_ids=inputs["token_type_ids"]).logits
    assert (ref - got).abs().max() <= 1e-5


def test_imported_bert_fine_tunes_qa(hf_bert, tmp_path):
    from lmlab.tasks.finetune import finetune

    import_hf(hf_bert, tmp_path / "lm")
    s = finetune("qa", str(FIX / "qa_en_train.json"), None, init=str(tmp_path / "lm"), out=str(tmp_path / "qa"),
                 overrides=[*TINY, "--train.max_steps=3", "--task.max_length=64", "--task.qa.stride=16"])
    assert s["steps"] == 3
    from lmlab.tasks.pipeline import pipeline

    answer = pipeline("qa", tmp_path / "qa")({"question": "who?", "context": "the cat sat on the mat"})
    assert answer["answer"] in "the cat sat on the mat"


def test_a_missing_role_names_the_file_and_field(hf_bert, tmp_path):
    """Masked-LM pretraining needs a mask token: without one in the HF files the error says where."""
    from lmlab.train.pretrain import pretrain

    cfg = json.loads((hf_bert / "tokenizer_config.json").read_text())
    bare = tmp_path / "hf"
    bare.mkdir()
    for f in hf_bert.iterdir():
        (bare / f.name).write_bytes(f.read_bytes())
    cfg.pop("mask_token", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    (bare / "special_tokens_map.json").unlink(missing_ok=True)
    summary = import_hf(bare, tmp_path / "lm")
    assert "mask" not in summary["tokenizer"]["special_tokens"]
    corpus = FIX.parent / "tiny_corpus.txt"
    with pytest.raises(ConfigError, match=r"no mask token \(mask_token in tokenizer_config.json.*lmlab hf import"):
        pretrain(out=str(tmp_path / "pt"), overrides=[f"--init={tmp_path / 'lm'}", "--objective=mlm",
                                                      f"--data.inputs=[{corpus}]", "--data.dataset=null",
                                                      "--train.max_steps=1", "--data.block_size=16"])


def test_lora_on_an_imported_bert_exports_with_equal_logits(hf_bert, tmp_path):
    """LoRA (rank 4 on q, v; head and pooler trained in full) on the imported BertModel: the merged
    model exports to BertForSequenceClassification with lmlab's logits."""
    from lmlab.model import load_model
    from lmlab.tasks.finetune import finetune

    s = finetune("sentiment", str(FIX / "sentiment_train.csv"), None, init=f"hf:{hf_bert}", out=str(tmp_path / "run"),
                 overrides=[*TINY, "--train.max_steps=4", "--lora.rank=4", "--optim.lr=1e-2"])
    assert s["lora"]["wrapped_layers"] == 4 and s["lora"]["trainable_fraction"] < 0.5
    base = load_model(tmp_path / "run" / "work" / "hf-import").state_dict()
    tuned = load_model(tmp_path / "run").state_dict()
    q = "encoder.layers.0.self_attn.q.weight"
    assert not torch.equal(base[q], tuned[q])  # the merged update moved W_q
    assert torch.equal(base["encoder.layers.0.self_attn.k.weight"], tuned["encoder.layers.0.self_attn.k.weight"])
    assert main(["hf", "export", str(tmp_path / "run"), str(tmp_path / "hf-out")]) == 0
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf-out").eval()
    ids = torch.tensor([[2, 17, 40, 9, 3, 0, 0], [2, 55, 61, 23, 70, 81, 3]])
    mask = (ids != 0).long()
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask).logits
        got = load_model(tmp_path / "run")(ids, attention_mask=mask).logits
    assert (ref - got).abs().max() <= 1e-5
