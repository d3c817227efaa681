"""`lmlab generate MODEL_DIR --prompt TEXT`: streams to stdout, summary on stderr, clear errors."""

import pytest
import torch

from lmlab import machine
from lmlab.cli import main
from lmlab.model import save_model

from .conftest import tiny


@pytest.fixture(scope="module")
def model_dir(bpe_dir, bpe, tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "model"
    save_model(tiny("gpt2", vocab_size=bpe.vocab_size), out, tokenizer_dir=bpe_dir)
    return out


def test_generate_streams_the_completion(model_dir, capsys):
    from lmlab.generate import generate, load_for_generation

    assert main(["generate", str(model_dir), "--prompt", "我们喜欢", "--max-new-tokens", "6",
                 "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    model, tok = load_for_generation(model_dir, dtype="auto")  # the CLI's default
    expect = generate(model, tok, "我们喜欢", max_new_tokens=6, temperature=0)
    assert out == "我们喜欢" + expect.text + "\n"
    assert f"finish_reason={expect.finish_reason} tokens={expect.completion_tokens}" in err


@pytest.mark.parametrize("kind, dtype", [("avx2", torch.float32), ("avx512", torch.float32),
                                         ("avx512_bf16", torch.bfloat16)])
def test_dtype_auto_is_the_machines_choice(model_dir, kind, dtype):
    from lmlab.generate import load_for_generation

    with machine.force(kind):
        model, _ = load_for_generation(model_dir, dtype="auto")
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert {p.dtype for p in load_for_generation(model_dir)[0].parameters()} == {torch.float32}  # as stored


def test_seeded_sampling_is_reproducible_from_the_cli(model_dir, capsys):
    args = ["generate", str(model_dir), "--prompt", "The", "--max-new-tokens", "10", "--seed", "7",
            "--top-k", "50", "--top-p", "0.9", "--no-echo"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first


@pytest.mark.parametrize("flag,value,field", [("--temperature", "nan", "temperature"), ("--top-p", "2", "top_p"),
                                              ("--max-new-tokens", "0", "max_new_tokens")])
def test_bad_values_are_clear_errors(model_dir, capsys, flag, value, field):
    assert main(["generate", str(model_dir), "--prompt", "x", flag, value]) == 2
    assert f"error: {field}" in capsys.readouterr().err


def test_a_model_without_tokenizer_is_refused(tmp_path, capsys):
    save_model(tiny("gpt2"), tmp_path / "m")
    assert main(["generate", str(tmp_path / "m"), "--prompt", "x"]) == 2
    assert "tokenizer" in capsys.readouterr().err
