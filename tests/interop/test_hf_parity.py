"""Hugging Face parity with no network: random-init tiny HF models with odd shapes (hidden 36, 3 heads,
vocab 99, seq 7, batch 3) → lmlab, and lmlab → HF; every key converted, pickles and custom code refused."""

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()

from lmlab.errors import CheckpointMismatch, ConfigError, UnsafeFormat  # noqa: E402
from lmlab.hf.convert import export_hf, import_hf  # noqa: E402
from lmlab.model import Transformer, load_model, preset, save_model  # noqa: E402

V, B, T = 99, 3, 7
BERT = dict(vocab_size=V, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=44,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def hf_models():
    T_ = transformers
    return {
        "BertModel": lambda: T_.BertModel(T_.BertConfig(**BERT)),
        "BertForMaskedLM": lambda: T_.BertForMaskedLM(T_.BertConfig(**BERT)),
        "BertForSequenceClassification": lambda: T_.BertForSequenceClassification(T_.BertConfig(**BERT, num_labels=3)),
        "BertForQuestionAnswering": lambda: T_.BertForQuestionAnswering(T_.BertConfig(**BERT)),
        "GPT2LMHeadModel": lambda: T_.GPT2LMHeadModel(T_.GPT2Config(
            vocab_size=V, n_embd=36, n_layer=2, n_head=3, n_positions=32, n_inner=44,
            resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, bos_token_id=None, eos_token_id=None)),
        "LlamaForCausalLM": lambda: T_.LlamaForCausalLM(T_.LlamaConfig(
            vocab_size=V, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
            intermediate_size=44, max_position_embeddings=32, bos_token_id=None, eos_token_id=None)),
        "MarianMTModel": lambda: T_.MarianMTModel(T_.MarianConfig(
            vocab_size=V, d_model=36, encoder_layers=2, decoder_layers=3, encoder_attention_heads=3,
            decoder_attention_heads=3, encoder_ffn_dim=44, decoder_ffn_dim=44, max_position_embeddings=32,
            pad_token_id=V - 1, decoder_start_token_id=V - 1, eos_token_id=0, scale_embedding=True,
            activation_function="swish", dropout=0.0)),
    }


def outputs(model, ids, mask, dec=None, hf=False):
    """The tensor that a family's parity is judged on."""
    with torch.no_grad():
        if dec is not None:
            return model(ids, attention_mask=mask, decoder_input_ids=dec).logits
        out = model(ids, attention_mask=mask)
        if hf:
            return out.logits if hasattr(out, "logits") and out.logits is not None else \
                torch.stack([out.start_logits, out.end_logits], -1) if hasattr(out, "start_logits") else \
                out.last_hidden_state
        return out.logits if out.logits is not None else out.hidden_states


def batch():
    ids = torch.randint(1, V - 1, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 5:] = 0  # right padding in one row
    return ids, mask


@pytest.mark.parametrize("arch", list(hf_models()))
def test_import_then_export_parity(arch, tmp_path, figure):
    hf = hf_models()[arch]().eval()
    hf.save_pretrained(tmp_path / "hf")
    summary = import_hf(tmp_path / "hf", tmp_path / "lm")
    model = load_model(tmp_path / "lm")
    ids, mask = batch()
    dec = torch.randint(1, V - 1, (B, 5)) if arch == "MarianMTModel" else None
    if dec is not None or arch.startswith(("GPT2", "Llama")):
        mask = torch.ones_like(mask)  # causal models: padding parity is covered by the encoder cases
    ref = outputs(hf, ids, mask, dec, hf=True)
    ours = outputs(model, ids, mask, dec)
    rows = mask.bool().all(-1)  # padded positions of BERT rows are unconstrained
    imported = (ref - ours)[rows].abs().max().item() if ref.dim() > 2 else (ref - ours).abs().max().item()
    if arch == "BertModel":
        pooled = hf(ids, attention_mask=mask).pooler_output
        assert (pooled - model(ids, attention_mask=mask).pooled).abs().max() <= 1e-5
    export_hf(tmp_path / "lm", tmp_path / "hf2")
    back = type(hf).from_pretrained(tmp_path / "hf2", use_safetensors=True).eval()
    exported = (outputs(back, ids, mask, dec, hf=True) - ref).abs().max().item()
    figure(import_max_abs_diff=imported, export_max_abs_diff=exported)
    assert imported <= 1e-5 and exported <= 1e-5
    assert summary["architecture"] == arch


def test_bert_padding_rows_match(tmp_path):
    hf = hf_models()["BertForSequenceClassification"]().eval()
    hf.save_pretrained(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "lm")
    model = load_model(tmp_path / "lm")
    ids, mask = batch()
    assert (hf(ids, attention_mask=mask).logits - model(ids, attention_mask=mask).logits).abs().max() <= 1e-5


def greedy(model, ids, n, src=None):
    """lmlab greedy decoding with the KV cache (lmlab.generate), as [prompt | continuation]."""
    from lmlab.generate import DecodeLoop, GenerationConfig

    loop = DecodeLoop(model, (src if src is not None else ids).tolist(),
                      GenerationConfig(temperature=0, max_new_tokens=n),
                      decoder_start_id=int(ids[0, 0]) if src is not None else None)
    list(loop)
    return torch.cat([ids, torch.tensor(loop.generated)], 1)


@pytest.mark.parametrize("family", ["gpt2", "llama", "transformer"])
def test_export_then_greedy_continuations_equal(family, tmp_path):
    kw = dict(vocab_size=V, d_model=36, n_heads=3, n_layers=2, d_ff=44, max_seq_len=32, dropout=0.0,
              attn_dropout=0.0)
    if family == "llama":
        kw["n_kv_heads"] = 1
    model = Transformer(preset(f"{family}-tiny", **kw)).eval()
    with torch.no_grad():  # make logits less flat so that argmax is not decided by rounding
        model.embed.tokens.weight.mul_(20)
    save_model(model, tmp_path / "lm")
    export_hf(tmp_path / "lm", tmp_path / "hf")
    cls = {"gpt2": transformers.GPT2LMHeadModel, "llama": transformers.LlamaForCausalLM,
           "transformer": transformers.MarianMTModel}[family]
    hf = cls.from_pretrained(tmp_path / "hf", use_safetensors=True).eval()
    prompt = torch.randint(1, V - 1, (B, 4))
    if family == "transformer":
        start = torch.zeros(B, 1, dtype=torch.long)  # decoder_start_token_id = pad = 0
        ours = greedy(model, start, 20, src=prompt)
        theirs = hf.generate(prompt, decoder_input_ids=start, max_new_tokens=20, do_sample=False,
                             num_beams=1, min_length=0)  # the export's generation_config bans <pad>, as lmlab does
    else:
        ours = greedy(model, prompt, 20)
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20,
                             do_sample=False, num_beams=1, pad_token_id=0, eos_token_id=None)
    assert torch.equal(ours, theirs)


def test_refuses_custom_code_and_pickle(tmp_path):
    hf = hf_models()["GPT2LMHeadModel"]()
    hf.save_pretrained(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf/config.json").read_text())
    (tmp_path / "hf/config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "evil.Model"}}))
    with pytest.raises(UnsafeFormat, match="custom model code"):
        import_hf(tmp_path / "hf", tmp_path / "a")
    (tmp_path / "hf/config.json").write_text(json.dumps(cfg))
    state = hf.state_dict()
    (tmp_path / "hf/model.safetensors").unlink()
    torch.save(state, tmp_path / "hf/pytorch_model.bin")
    with pytest.raises(UnsafeFormat, match="--allow-pickle"):
        import_hf(tmp_path / "hf", tmp_path / "a")
    assert not (tmp_path / "a").exists()
    import_hf(tmp_path / "hf", tmp_path / "a", allow_pickle=True)  # weights_only=True underneath

    class Payload:  # unpickling it would create `ran`
        def __reduce__(self):
            return (open, (str(tmp_path / "ran"), "a"))
    torch.save({**state, "extra": Payload()}, tmp_path / "hf/pytorch_model.bin")
    with pytest.raises(UnsafeFormat, match="pytorch_model.bin: not a plain tensor checkpoint"):
        import_hf(tmp_path / "hf", tmp_path / "b", allow_pickle=True)
    assert not (tmp_path / "ran").exists() and not (tmp_path / "b").exists()


def test_every_key_consumed_and_every_parameter_filled(tmp_path):
    from safetensors.torch import load_file, save_file

    hf = hf_models()["BertForMaskedLM"]()
    hf.save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf/model.safetensors"
    tensors = load_file(path)
    save_file({**tensors, "bert.extra.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointMismatch, match="bert.extra.weight"):
        import_hf(tmp_path / "hf", tmp_path / "a")
    tensors.pop("bert.encoder.layer.1.output.dense.weight")
    save_file(tensors, path)
    with pytest.raises(CheckpointMismatch, match="layer.1.output.dense.weight"):
        import_hf(tmp_path / "hf", tmp_path / "a")


def test_unsupported_architecture_is_named(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf/config.json").write_text(json.dumps({"architectures": ["T5Model"]}))
    with pytest.raises(ConfigError, match="T5Model"):
        import_hf(tmp_path / "hf", tmp_path / "a")


def test_bert_tokenizer_and_model_load_from_an_exported_directory(tmp_path):
    """The seed's own example, against a directory that lmlab exported."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", ",", "world", "!", "wor", "##ld"]
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (tok_dir / "tokenizer_config.json").write_text(
        json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    model = Transformer(preset("bert-tiny", vocab_size=len(vocab), d_model=36, n_heads=3, n_layers=2, d_ff=44,
                               max_seq_len=32, head="none")).eval()
    save_model(model, tmp_path / "lm", tokenizer_dir=tok_dir)
    export_hf(tmp_path / "lm", tmp_path / "DIR")
    tokenizer = transformers.BertTokenizer.from_pretrained(tmp_path / "DIR")
    hf_model = transformers.BertModel.from_pretrained(tmp_path / "DIR").eval()
    inputs = tokenizer("Hello, world!", return_tensors="pt")
    assert inputs["input_ids"].tolist() == [[2, 5, 6, 7, 8, 3]]
    with torch.no_grad():
        output = hf_model(**inputs)
        ours = model(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                     token_type_ids=inputs["token_type_ids"])
    assert (output.last_hidden_state - ours.hidden_states).abs().max() <= 1e-5
    assert (output.pooler_output - ours.pooled).abs().max() <= 1e-5


def test_question_match_qa_model_exports_with_three_segments(tmp_path):
    """QA's question_match grows the segment table to 3 rows: BertForQuestionAnswering loads the
    export and agrees on inputs that use segment 2."""
    from lmlab.model.pretrained import model_from_init

    save_model(Transformer(preset("bert-tiny", vocab_size=V, d_model=36, n_heads=3, n_layers=2, d_ff=44,
                                  max_seq_len=32, head="span", pooler=False, dropout=0.0, attn_dropout=0.0)),
               tmp_path / "base")
    model, _ = model_from_init(tmp_path / "base", {"head": "span", "type_vocab_size": 3})
    with torch.no_grad():
        model.embed.segments.weight[2] += 0.5  # as after training: the new row apart from the others
    save_model(model, tmp_path / "qa")
    export_hf(tmp_path / "qa", tmp_path / "hf")
    hf = transformers.BertForQuestionAnswering.from_pretrained(tmp_path / "hf", use_safetensors=True).eval()
    ids, mask = batch()
    types = torch.tensor([[0, 0, 1, 2, 2, 1, 2]] * B)
    with torch.no_grad():
        ours = load_model(tmp_path / "qa").eval()(ids, attention_mask=mask, token_type_ids=types).logits
        out = hf(ids, attention_mask=mask, token_type_ids=types)
    rows = mask.bool().all(-1)
    assert hf.config.type_vocab_size == 3
    torch.testing.assert_close(torch.stack([out.start_logits, out.end_logits], -1)[rows], ours[rows],
                               atol=1e-5, rtol=1e-5)


def test_a_copy_model_is_refused_by_export_and_nothing_is_written(tmp_path):
    model = Transformer(preset("transformer-tiny", vocab_size=V, d_model=36, n_heads=3, n_layers=2, d_ff=44,
                               max_seq_len=32, copy=True))
    save_model(model, tmp_path / "m")
    with pytest.raises(ConfigError, match="pointer-generator"):
        export_hf(tmp_path / "m", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
