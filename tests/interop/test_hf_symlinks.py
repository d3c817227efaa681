"""`hf import` and `hf export` copy tokenizer files: never through a symlink that leaves the
source directory (a planted ``tokenizer.json -> ~/.ssh/id_rsa`` would land in the output)."""

import json

import pytest

from lmlab.errors import ArtifactError
from lmlab.hf.convert import export_hf, import_hf
from lmlab.model import Transformer, preset, save_model


def _model_dir(tmp_path):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    model = Transformer(preset("bert-tiny", vocab_size=7, d_model=8, n_heads=2, n_layers=1, d_ff=16,
                               max_seq_len=8, head="none"))
    save_model(model, tmp_path / "lm", tokenizer_dir=tok)
    return tmp_path / "lm"


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("private key")
    return path


def test_import_refuses_a_tokenizer_symlink_out_of_the_directory(tmp_path, secret):
    export_hf(_model_dir(tmp_path), tmp_path / "hf")
    (tmp_path / "hf" / "vocab.txt").unlink()
    (tmp_path / "hf" / "vocab.txt").symlink_to(secret)
    with pytest.raises(ArtifactError, match="vocab.txt.*outside"):
        import_hf(tmp_path / "hf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_follows_a_symlink_inside_the_directory_and_a_hub_cache_snapshot(tmp_path):
    """The Hugging Face cache keeps …/snapshots/REV/FILE as links to …/blobs/HASH: allowed."""
    export_hf(_model_dir(tmp_path), tmp_path / "hf")
    repo = tmp_path / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    for f in (tmp_path / "hf").iterdir():
        blob = repo / "blobs" / f"{f.name}.blob"
        blob.write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(f"../../blobs/{blob.name}")
    import_hf(snap, tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer" / "vocab.txt").read_text().startswith("[PAD]")
    (tmp_path / "hf" / "vocab.txt").rename(tmp_path / "hf" / "vocab.real")
    (tmp_path / "hf" / "vocab.txt").symlink_to("vocab.real")
    import_hf(tmp_path / "hf", tmp_path / "out2")
    assert (tmp_path / "out2" / "tokenizer" / "vocab.txt").read_text().startswith("[PAD]")


def test_export_refuses_a_tokenizer_symlink_out_of_the_model(tmp_path, secret):
    lm = _model_dir(tmp_path)
    (lm / "tokenizer" / "merges.txt").symlink_to(secret)
    with pytest.raises(ArtifactError, match="merges.txt.*outside"):
        export_hf(lm, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    assert json.loads((lm / "manifest.json").read_text())  # the model itself is untouched
