"""The sinusoidal positional encoding of Vaswani et al. (2017, §3.5), drawn.

PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)), from
`lmlab.model.position.sinusoidal_table`. Two pictures:

* ``pe_matrix.png``: the [max_len, d_model] table as an image (rows = positions).
* ``dot_by_distance.png``: PE(p)·PE(p+k) against the distance k. Because
  sin(a)sin(b) + cos(a)cos(b) = cos(a − b), the dot product is Σ_i cos(k·ω_i), which depends on
  k only (not on p) and is symmetric in ±k — the property that lets attention read relative
  positions. The curve is computed from the table at p = 0 and, as a check, averaged over
  all p; both are written to ``positions.json`` with the closed form.
"""

from __future__ import annotations

import numpy as np

from lmlab.config import check


def dot_by_distance(pe: np.ndarray) -> dict[str, list[float]]:
    """Dot products PE(0)·PE(k), their mean over p of PE(p)·PE(p+k), and the closed form Σ cos(kω)."""
    n, d = pe.shape
    ks = np.arange(n)
    at0 = pe @ pe[0]
    mean = np.array([np.mean(np.sum(pe[: n - k] * pe[k:], axis=1)) for k in ks])
    omega = 1.0 / (10000.0 ** (np.arange(0, d, 2) / d))
    closed = np.cos(ks[:, None] * omega[None, :]).sum(1)
    return {"distance": ks.tolist(), "at_0": at0.tolist(), "mean": mean.tolist(), "closed_form": closed.tolist()}


def positions_command(d_model: int, max_len: int, out: str, overwrite: bool = False) -> str:
    """CLI: ``lmlab viz positions --d-model N --max-len N --out DIR``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmlab.artifacts import ArtifactWriter, write_json
    from lmlab.model.position import sinusoidal_table

    check(isinstance(d_model, int) and 2 <= d_model <= 8192 and d_model % 2 == 0, "d_model",
          f"must be an even integer in [2, 8192], got {d_model!r}")
    check(isinstance(max_len, int) and 2 <= max_len <= 100_000, "max_len", f"must be in [2, 100000], got {max_len!r}")
    pe = sinusoidal_table(max_len, d_model).double().numpy()
    curve = dot_by_distance(pe)
    with ArtifactWriter(out, kind="lmlab-viz-positions", overwrite=overwrite) as w:
        fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
        im = ax.imshow(pe, aspect="auto", cmap="RdBu", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xlabel("dimension")
        ax.set_ylabel("position")
        ax.set_title(f"sinusoidal positional encoding, d_model={d_model}")
        fig.colorbar(im, ax=ax)
        fig.savefig(w.path / "pe_matrix.png", bbox_inches="tight")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(8, 4), dpi=110)
        ax.plot(curve["distance"], curve["at_0"], label="PE(0)·PE(k)")
        ax.plot(curve["distance"], curve["closed_form"], "--", label="Σ cos(k·ω_i)")
        ax.set_xlabel("distance k")
        ax.set_ylabel("dot product")
        ax.set_title("dot product of two positions by their distance")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.savefig(w.path / "dot_by_distance.png", bbox_inches="tight")
        plt.close(fig)
        write_json(w.path / "positions.json", {"d_model": d_model, "max_len": max_len, **curve})
    return f"positional encoding {max_len}×{d_model} → {out}"
