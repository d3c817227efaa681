"""`lmlab pretrain` end to end on a project-made corpus: CLM, MLM and denoising produce model
directories; a run killed with SIGKILL resumes to the same losses and weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmlab.model import load_model
from lmlab.train.pretrain import pretrain

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tiny_corpus.txt"
TINY = ["--model.d_model=32", "--model.n_heads=2", "--model.n_layers=2", "--model.d_ff=64",
        "--train.batch_size=4", "--train.progress=false", "--train.threads=1", "--train.log_every_steps=1",
        "--train.eval_every_steps=5", "--train.eval_batches=2", "--train.precision=fp32", "--train.peak_flops=1e9",
        "--optim.warmup_steps=2", "--optim.lr=3e-3", "--data.valid_fraction=0.1"]


@pytest.mark.parametrize("objective, preset, kind", [
    ("clm", "gpt2-tiny", "bpe"), ("mlm", "bert-tiny", "wordpiece"), ("denoise", "transformer-tiny", "unigram"),
])
def test_pretrain_objectives_write_a_model(tmp_path, objective, preset, kind):
    summary = pretrain(None, str(tmp_path), [
        f"--objective={objective}", f"--model.preset={preset}", f"--data.inputs=[{FIXTURE}]",
        "--data.dataset=null", f"--data.tokenizer_kind={kind}", "--data.vocab_size=120",
        "--data.block_size=24", "--train.max_steps=15", "--train.save_every_steps=10", *TINY])
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 15 and "val_loss" in rows[-1] and "elapsed_s" in rows[-1]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    model = load_model(tmp_path / "model")
    assert model.config.head == {"clm": "clm", "mlm": "mlm", "denoise": "seq2seq"}[objective]
    assert (tmp_path / "model" / "tokenizer" / "tokenizer.json").exists()
    assert summary["steps"] == 15


def _cli(out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "lmlab", "pretrain", "--out", str(out), f"--data.inputs=[{FIXTURE}]",
            "--data.dataset=null", "--data.tokenizer_kind=char", "--data.vocab_size=64", "--data.block_size=16",
            f"--train.max_steps={steps}", "--train.save_every_steps=3", "--model.dropout=0.1", *TINY]


def test_kill_minus_9_then_resume_is_bitwise_exact(tmp_path, figure):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    subprocess.run(_cli(tmp_path / "ref", 24), check=True, env=env, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(_cli(run, 24), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step-00000009").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    subprocess.run(_cli(run, 24), check=True, env=env, capture_output=True)
    ref = [json.loads(x)["train_loss"] for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(x)["train_loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    a, b = load_model(tmp_path / "ref" / "model"), load_model(run / "model")
    diff = max((x - y).abs().max().item() for x, y in zip(a.parameters(), b.parameters()))
    figure(max_abs_loss_diff=max(abs(x - y) for x, y in zip(ref, got)), max_param_diff=diff)
    assert got == ref and diff == 0.0


def test_masked_lm_run_resumes_though_its_pooler_has_no_optimizer_state(tmp_path):
    """Under masked LM a BERT's pooler gets no gradient, so no optimizer state: resuming from the
    checkpoint (here the finished run's last) must load anyway and give the same model."""
    import torch

    args = ["--objective=mlm", "--model.preset=bert-tiny", f"--data.inputs=[{FIXTURE}]", "--data.dataset=null",
            "--data.tokenizer_kind=wordpiece", "--data.vocab_size=120", "--data.block_size=24",
            "--train.max_steps=6", "--train.save_every_steps=3", *TINY]
    pretrain(None, str(tmp_path), args)
    first = load_model(tmp_path / "model").state_dict()
    assert pretrain(None, str(tmp_path), args)["steps"] == 6
    again = load_model(tmp_path / "model").state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_unknown_recipe_key_is_refused(tmp_path):
    from lmlab.errors import ConfigError

    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  max_step: 3\n")
    with pytest.raises(ConfigError, match="train.max_step.*valid keys of train"):
        pretrain(str(recipe), str(tmp_path / "out"))


def test_init_vectors_fill_the_embeddings_before_training(tmp_path):
    """`init_vectors`: the tokens that are words start from their word vectors (d_model 32 = the
    vectors' size, so no projection); one step at a negligible learning rate keeps them there."""
    import numpy as np
    import torch

    from lmlab.artifacts import load_tensors
    from lmlab.embeddings.vectors import WordVectors
    from lmlab.tokenizer.tokenizer import Tokenizer

    words = ["the", "and", "a", "not-a-token-here"]
    vecs = np.random.default_rng(5).standard_normal((len(words), 32)).astype(np.float32)
    WordVectors(words, vecs).save(tmp_path / "vec")
    summary = pretrain(None, str(tmp_path / "run"), [
        "--objective=mlm", "--model.preset=bert-tiny", f"--data.inputs=[{FIXTURE}]", "--data.dataset=null",
        "--data.tokenizer_kind=wordpiece", "--data.vocab_size=120", "--data.lowercase=true", "--data.block_size=24",
        "--train.max_steps=1", *TINY, "--optim.lr=1e-9", "--optim.min_lr=0", f"--init_vectors={tmp_path / 'vec'}"])
    assert summary["vectors"]["matched"] >= 3  # "##a" takes the vector of "a" too
    tok = Tokenizer.load(tmp_path / "run" / "model" / "tokenizer")
    emb = load_tensors(tmp_path / "run" / "model" / "model.safetensors")["embed.tokens.weight"]
    for w, v in zip(words[:3], vecs):
        assert torch.cosine_similarity(emb[tok.token_to_id(w)], torch.from_numpy(v), 0) > 0.999, w


def test_init_continues_a_model_on_new_text_with_its_tokenizer(tmp_path):
    """`init`: task-adaptive pretraining starts from the init model's weights and tokenizer (one
    step at a negligible learning rate leaves the weights where they were) on another text."""
    from lmlab.artifacts import load_tensors
    from lmlab.errors import ConfigError

    base = ["--objective=mlm", "--data.dataset=null", "--data.block_size=24", "--train.max_steps=1",
            *[o for o in TINY if not o.startswith("--model.")]]
    pretrain(None, str(tmp_path / "a"), [*base, "--model.preset=bert-tiny", "--model.d_model=32",
                                          "--model.n_heads=2", "--model.n_layers=2", "--model.d_ff=64",
                                          f"--data.inputs=[{FIXTURE}]", "--data.tokenizer_kind=wordpiece",
                                          "--data.vocab_size=120", "--train.max_steps=10"])
    task_text = tmp_path / "reviews.tsv"
    task_text.write_text("label\ttext_a\n" + "".join(f"{i % 2}\tthe film was {w} and the cast {w}\n"
                                                     for i, w in enumerate(["good", "bad", "dull", "fine"] * 30)))
    summary = pretrain(None, str(tmp_path / "b"), [*base, f"--init={tmp_path / 'a' / 'model'}",
                                                   f"--data.inputs=[{task_text}]", "--data.text_field=text_a",
                                                   "--optim.lr=1e-9", "--optim.min_lr=0"])
    assert summary["init"] == str(tmp_path / "a" / "model") and summary["new_tensors"] == []
    corpus = (tmp_path / "b" / "data" / "corpus").glob("train-*.jsonl")
    assert any("the film was" in p.read_text() for p in corpus)  # the text column, not the labels
    a_tok = (tmp_path / "a" / "model" / "tokenizer" / "tokenizer.json").read_text()
    assert (tmp_path / "b" / "model" / "tokenizer" / "tokenizer.json").read_text() == a_tok
    a, b = (load_tensors(tmp_path / r / "model" / "model.safetensors") for r in ("a", "b"))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert load_model(tmp_path / "b" / "model").config.d_model == 32

    with pytest.raises(ConfigError, match="model.*init continues"):
        pretrain(None, str(tmp_path / "c"), [*base, f"--init={tmp_path / 'a' / 'model'}", "--model.d_model=64",
                                             f"--data.inputs=[{task_text}]"])
    with pytest.raises(ConfigError, match="max_seq_len=.* < data.block_size=512"):
        pretrain(None, str(tmp_path / "d"), [*base, f"--init={tmp_path / 'a' / 'model'}",
                                             f"--data.inputs=[{task_text}]", "--data.text_field=text_a",
                                             "--data.block_size=512"])
    pretrain(None, str(tmp_path / "char"), [*base, "--model.preset=bert-tiny", "--model.d_model=32",
                                             "--model.n_heads=2", "--model.n_layers=2", "--model.d_ff=64",
                                             f"--data.inputs=[{FIXTURE}]", "--data.tokenizer_kind=wordpiece",
                                             "--data.vocab_size=90"])
    shards = tmp_path / "a" / "data" / "shards"  # the init model's own shards train on as they are
    assert pretrain(None, str(tmp_path / "f"), [*base, f"--init={tmp_path / 'a' / 'model'}", "--data.inputs=[]",
                                                f"--data.shards={shards}"])["steps"] == 1
    with pytest.raises(ConfigError, match="data.shards.*another tokenizer"):
        pretrain(None, str(tmp_path / "e"), [*base, f"--init={tmp_path / 'a' / 'model'}", "--data.inputs=[]",
                                             f"--data.shards={tmp_path / 'char' / 'data' / 'shards'}"])


def test_decay_steps_stops_a_run_where_a_longer_one_passes(tmp_path):
    """--optim.decay_steps=12 with --train.max_steps=6 ends on the weights that the 12-step run
    checkpoints at step 6 (the schedule is the longer run's): how a recipe continues from the
    middle of another."""
    import torch

    from lmlab.artifacts import load_tensors

    args = ["--objective=mlm", "--model.preset=bert-tiny", "--data.dataset=null", "--data.block_size=24",
            "--train.save_every_steps=6", "--optim.schedule=cosine", *TINY]
    pretrain(None, str(tmp_path / "long"), args + ["--train.max_steps=12", f"--data.inputs=[{FIXTURE}]",
                                                   "--data.tokenizer_kind=wordpiece", "--data.vocab_size=120"])
    args.append(f"--data.shards={tmp_path / 'long' / 'data' / 'shards'}")  # the same tokens
    pretrain(None, str(tmp_path / "short"), args + ["--train.max_steps=6", "--optim.decay_steps=12"])
    pretrain(None, str(tmp_path / "own"), args + ["--train.max_steps=6"])
    mid = load_tensors(tmp_path / "long" / "checkpoints" / "step-00000006" / "model.safetensors")
    short = load_model(tmp_path / "short" / "model").state_dict()
    own = load_model(tmp_path / "own" / "model").state_dict()
    assert all(torch.equal(mid[k], short[k]) for k in mid)
    assert not all(torch.equal(mid[k], own[k]) for k in mid)  # its own 6-step schedule differs


def test_activation_checkpointing_recomputes_both_stacks_to_the_same_losses(tmp_path):
    """--train.activation_checkpointing wraps every layer of the encoder and the decoder; the
    recomputed forward gives the losses and weights of the plain run (dropout included)."""
    import torch

    from lmlab.train.distributed import transformer_layers

    args = ["--objective=denoise", "--model.preset=transformer-tiny", "--data.dataset=null",
            "--data.block_size=24", "--train.max_steps=4", "--model.dropout=0.1", *TINY]
    pretrain(None, str(tmp_path / "plain"), args + [f"--data.inputs=[{FIXTURE}]", "--data.tokenizer_kind=unigram",
                                                    "--data.vocab_size=120"])
    shards = f"--data.shards={tmp_path / 'plain' / 'data' / 'shards'}"
    pretrain(None, str(tmp_path / "ckpt"), args + [shards, "--train.activation_checkpointing=true"])
    losses = [[json.loads(x)["train_loss"] for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("plain", "ckpt")]
    assert losses[0] == losses[1]
    a, b = load_model(tmp_path / "plain" / "model").state_dict(), load_model(tmp_path / "ckpt" / "model").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    model = load_model(tmp_path / "plain" / "model")
    layers = transformer_layers(model)  # what the option wraps: both stacks, in order
    assert layers == [*model.encoder.layers, *model.decoder.layers] and len(layers) == 4


def test_a_diverging_run_exits_with_the_divergence_code(tmp_path, capsys):
    """`lmlab pretrain` whose loss turns non-finite stops with TrainingDiverged's exit status (3),
    which a scheduler can tell apart from a bad option (2)."""
    from lmlab.cli import main
    from lmlab.train.guard import TrainingDiverged

    code = main(["pretrain", "--out", str(tmp_path), f"--data.inputs=[{FIXTURE}]", "--data.dataset=null",
                 "--data.tokenizer_kind=char", "--data.vocab_size=64", "--data.block_size=16",
                 "--train.max_steps=6", *TINY, "--optim.lr=1e30", "--optim.grad_clip=0"])
    err = capsys.readouterr().err
    assert code == TrainingDiverged.exit_code == 3, err
    assert err.startswith("error: step") and "non-finite" in err and "Traceback" not in err


def test_a_second_run_in_the_same_directory_writes_nothing_before_it_is_refused(tmp_path, another_run):
    """The run lock is taken before OUT/data is built: a second `lmlab pretrain --out` on a
    directory in use must not rebuild (or half-write) the data the first one is reading."""
    from lmlab.errors import ArtifactError

    with another_run(tmp_path):
        with pytest.raises(ArtifactError, match="another run"):
            pretrain(None, str(tmp_path), [f"--data.inputs=[{FIXTURE}]", "--data.dataset=null",
                                           "--data.tokenizer_kind=char", "--data.vocab_size=64",
                                           "--train.max_steps=1", *TINY])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"]


def test_data_built_with_other_options_is_refused_by_field(tmp_path):
    """OUT/data built with data.vocab_size=120 is not silently reused for vocab_size=100: the
    message names the field, both values and the ways out; the same options reuse it."""
    from lmlab.errors import ConfigError

    args = [f"--data.inputs=[{FIXTURE}]", "--data.dataset=null", "--data.tokenizer_kind=bpe",
            "--data.block_size=16", "--train.max_steps=2", *TINY]
    pretrain(None, str(tmp_path), [*args, "--data.vocab_size=120"])
    tokenizer = (tmp_path / "data" / "tokenizer" / "tokenizer.json").read_bytes()
    with pytest.raises(ConfigError, match=r"data.vocab_size: 120 .* 100 now") as e:
        pretrain(None, str(tmp_path), [*args, "--data.vocab_size=100", "--train.max_steps=3"])
    assert f"delete {tmp_path / 'data'}" in str(e.value) and "another --out" in str(e.value)
    assert (tmp_path / "data" / "tokenizer" / "tokenizer.json").read_bytes() == tokenizer
    assert pretrain(None, str(tmp_path), [*args, "--data.vocab_size=120", "--train.max_steps=3"])["steps"] == 3
