"""Golden loss curve (B8): the tiny causal-LM recipe of `helpers` for 100 steps (dropout on)
reproduces the losses stored in tests/fixtures/losses/clm-tiny.txt to 1e-6, on the torch version
that wrote them (another torch may change kernels and last bits: the test then skips; rewrite
the file with `python tests/unit/train/test_golden.py` after checking the curve by eye)."""

import sys
from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).parents[2] / "fixtures" / "losses" / "clm-tiny.txt"


def curve(out: Path) -> list[float]:
    from tests.unit.train.helpers import losses, make_trainer

    make_trainer(out, max_steps=100, save_every_steps=1000).fit()
    return losses(out)


def test_clm_losses_equal_the_golden_curve(tmp_path, figure):
    header, *rows = GOLDEN.read_text().splitlines()
    if header != f"# torch {torch.__version__}":
        pytest.skip(f"golden curve written with {header[2:]}, this is torch {torch.__version__}")
    golden = [float(x) for x in rows]
    got = curve(tmp_path)
    diff = max(abs(a - b) for a, b in zip(got, golden))
    figure(max_abs_loss_diff=diff, steps=len(got))
    assert len(got) == len(golden) == 100 and diff <= 1e-6


if __name__ == "__main__":
    import tempfile

    sys.path.insert(0, str(Path(__file__).parents[3]))
    torch.set_num_threads(1)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        GOLDEN.write_text(f"# torch {torch.__version__}\n" + "".join(f"{x!r}\n" for x in curve(Path(d))))
