"""C1 (malicious pickles at every load entry point) and C2 (mutated safetensors headers)."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import torch

from .table import row
from .runs import data_args, forked


# -- C1: malicious pickles at every load entry point ------------------------------------------------

class Payload:
    """Unpickling this calls open(sentinel, "a"): the file appears exactly when code ran."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return (open, (self.sentinel, "a"))


def build_payloads(sentinel: str) -> dict[str, tuple[bytes, str]]:
    """Ten payloads: name → (bytes, the naive loader under which they fire)."""
    import gzip
    import io
    import pickle

    import numpy as np

    class EvilTensor(torch.Tensor):
        def __reduce_ex__(self, protocol):
            return (open, (sentinel, "a"))

    def torch_bytes(obj, legacy=False) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
        return buf.getvalue()

    npy = io.BytesIO()
    np.save(npy, np.array([Payload(sentinel), 1], dtype=object), allow_pickle=True)
    p = Payload(sentinel)
    return {
        "pickle protocol 2": (pickle.dumps(p, protocol=2), "pickle"),
        "pickle protocol 0 (text)": (pickle.dumps(p, protocol=0), "pickle"),
        "pickle protocol 5": (pickle.dumps(p, protocol=5), "pickle"),
        "nested in a dict": (pickle.dumps({"state_dict": {"w": [p]}}, protocol=4), "pickle"),
        "zip .pt (torch.save)": (torch_bytes({"state_dict": {"w": p}}), "torch"),
        "legacy .pt (torch.save, not zip)": (torch_bytes({"w": p}, legacy=True), "torch"),
        "tensor subclass in a zip .pt": (torch_bytes({"w": torch.zeros(2).as_subclass(EvilTensor)}), "torch"),
        "object .npy": (npy.getvalue(), "numpy"),
        "gzip-wrapped pickle": (gzip.compress(pickle.dumps(p, protocol=4)), "gzip"),
        "hand-written GLOBAL builtins.eval": (
            b"cbuiltins\neval\n(Vopen(" + repr(sentinel).encode() + b", 'a')\ntR.", "pickle"),
    }


def naive_load(data: bytes, how: str) -> None:
    """Load `data` the way a careless loader would. It only ever sees payloads this script built, in
    a scratch directory: it is the oracle that each payload is live (touches its sentinel when
    unpickled), so that lmlab's refusal of the same bytes means something."""
    import gzip
    import io
    import pickle

    import numpy as np

    if how == "pickle":
        pickle.loads(data)
    elif how == "gzip":
        pickle.loads(gzip.decompress(data))
    elif how == "numpy":
        np.load(io.BytesIO(data), allow_pickle=True)
    else:
        torch.load(io.BytesIO(data), weights_only=False)


def rehash(root: Path, changed: Path) -> None:
    """Make every manifest under `root` agree with `changed`: the parser, not the hash, must refuse."""
    from lmlab.artifacts import sha256_file

    for manifest in root.rglob("manifest.json"):
        m = json.loads(manifest.read_text())
        for rel, meta in m.get("files", {}).items():
            if (manifest.parent / rel).resolve() == changed.resolve():
                meta.update(sha256=sha256_file(changed), bytes=changed.stat().st_size)
        manifest.write_text(json.dumps(m, indent=2))


def c1_child(work: Path, out: Path) -> int:
    from lmlab.embeddings.vectors import WordVectors, read_vectors_file
    from lmlab.errors import LmlabError
    from lmlab.generate.stream import load_for_generation
    from lmlab.hf.convert import export_hf, import_hf
    from lmlab.model import load_model
    from lmlab.data.shards import TokenShards
    from lmlab.tokenizer.tokenizer import Tokenizer
    from lmlab.train.checkpoint import load_checkpoint
    from lmlab.train.optim import OptimConfig, build_optimizer

    import numpy as np

    prep = work / "prep"
    fixtures = work / "c1-fixtures"
    if not fixtures.exists():
        fixtures.mkdir()
        export_hf(prep / "model", fixtures / "hf")
        WordVectors(["a", "b"], np.ones((2, 4), dtype=np.float32)).save(fixtures / "vectors")
    sentinel = str(work / "c1-sentinel")
    payloads = build_payloads(sentinel)
    live = 0
    for data, how in payloads.values():
        Path(sentinel).unlink(missing_ok=True)
        try:
            naive_load(data, how)
        except Exception:
            pass
        live += os.path.exists(sentinel)
        Path(sentinel).unlink(missing_ok=True)

    def resume(path):
        model = load_model(prep / "model")
        load_checkpoint(path, model, build_optimizer(model, OptimConfig()))

    def hf_bin(d):
        (d / "model.safetensors").unlink()
        return d / "pytorch_model.bin"

    # entry point → (fixture to copy, file to replace with the payload (or a function of the copy), call)
    entries = {
        "hf import (pytorch_model.bin)": (fixtures / "hf", hf_bin, lambda d: import_hf(d, work / "c1-out")),
        "hf import --allow-pickle (pytorch_model.bin)": (fixtures / "hf", hf_bin,
                                                          lambda d: import_hf(d, work / "c1-out", allow_pickle=True)),
        "hf import (model.safetensors)": (fixtures / "hf", "model.safetensors",
                                          lambda d: import_hf(d, work / "c1-out")),
        "model load (model.safetensors)": (prep / "model", "model.safetensors", load_model),
        "generate/serve load (model.safetensors)": (prep / "model", "model.safetensors", load_for_generation),
        "tokenizer load (tokenizer.json)": (prep / "model" / "tokenizer", "tokenizer.json", Tokenizer.load),
        "checkpoint resume (model.safetensors)": (prep / "checkpoints" / "step-00000001", "model.safetensors", resume),
        "checkpoint resume (optimizer.safetensors)": (prep / "checkpoints" / "step-00000001",
                                                      "optimizer.safetensors", resume),
        "vectors load (vectors.safetensors)": (fixtures / "vectors", "vectors.safetensors", WordVectors.load),
        "embed import word2vec-binary": (None, "v.bin", lambda f: read_vectors_file(f, "word2vec-binary")),
        "embed import word2vec-text": (None, "v.txt", lambda f: read_vectors_file(f, "word2vec-text")),
        "embed import glove-text": (None, "v.txt", lambda f: read_vectors_file(f, "glove-text")),
        "token shards (train/00000.idx)": (prep / "data" / "shards", "train/00000.idx",
                                           lambda d: TokenShards(d, "train", verify_hashes=True)),
    }
    results = []
    for entry, (fixture, target, call) in entries.items():
        for name, (data, _) in payloads.items():
            case = work / "c1-case"
            shutil.rmtree(case, ignore_errors=True)
            shutil.rmtree(work / "c1-out", ignore_errors=True)
            Path(sentinel).unlink(missing_ok=True)
            if fixture is None:
                case.mkdir()
                path = case / target
                arg = path
            else:
                shutil.copytree(fixture, case)
                path = target(case) if callable(target) else case / target
                arg = case
            path.write_bytes(data)
            rehash(case, path)
            try:
                call(arg)
                outcome = "accepted"
            except LmlabError as e:
                outcome = f"typed {type(e).__name__}"
            except Exception as e:
                outcome = f"untyped {type(e).__name__}: {str(e)[:80]}"
            results.append({"entry": entry, "payload": name, "outcome": outcome, "ran": os.path.exists(sentinel)})
    # A recipe is YAML: the YAML way to run code, handed to the config loader.
    from lmlab.config import load_config
    from lmlab.train.pretrain import PretrainConfig

    recipe = work / "c1-recipe.yaml"
    recipe.write_text(f"train:\n  max_steps: !!python/object/apply:builtins.open [{sentinel!r}, 'a']\n")
    Path(sentinel).unlink(missing_ok=True)
    try:
        load_config(PretrainConfig, str(recipe), [])
        outcome = "accepted"
    except LmlabError as e:
        outcome = f"typed {type(e).__name__}"
    except Exception as e:
        outcome = f"untyped {type(e).__name__}"
    results.append({"entry": "recipe YAML (lmlab pretrain --config)", "payload": "!!python/object/apply",
                    "outcome": outcome, "ran": os.path.exists(sentinel)})
    out.write_text(json.dumps({"live": live, "payloads": len(payloads), "results": results}))
    return 0


def campaign_c1(work: Path, quick: bool) -> list[dict]:
    data_args(work)
    out = work / "c1.json"
    code = forked(c1_child, work, out, log=work / "c1.log")
    if code != 0:
        return [row("C1", 0, 1, f"the campaign's child exited with {code}", "campaign C1")]
    res = json.loads(out.read_text())
    cases = res["results"]
    ran = [c for c in cases if c["ran"]]
    untyped = [c for c in cases if not c["outcome"].startswith("typed")]
    entries = sorted({c["entry"] for c in cases})
    by_payload = {}
    for c in cases:
        by_payload.setdefault(c["payload"], []).append(c["outcome"].startswith("typed") and not c["ran"])
    refused_payloads = sum(all(v) for k, v in by_payload.items() if k != "!!python/object/apply")
    examples = sorted({f"{c['entry']}: {c['outcome']}" for c in untyped})
    return [row("C1", len(cases), len(ran) + len(untyped),
                f"code ran (sentinel created): {len(ran)}; payloads refused with a typed error at every entry "
                f"point: {refused_payloads}/{res['payloads']}; untyped or no refusal: {len(untyped)}"
                + (f" ({'; '.join(examples[:4])})" if examples else ""),
                f"campaign C1 ({res['payloads']} payloads, live under a naive load: {res['live']}/{res['payloads']}; "
                f"× {len(entries) - 1} entry points + a YAML tag to the recipe loader)",
                entries=entries)]


# -- C2: mutated safetensors headers -----------------------------------------------------------------

def safetensors_cases(n: int, seed: int) -> list[tuple[str, bytes]]:
    """`n` malformed files: (kind, bytes), from a valid two-tensor file."""
    import struct

    rng = random.Random(seed)
    body = bytes(range(256)) * 2  # 512 data bytes
    good = {"a": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 128]},
            "b": {"dtype": "I64", "shape": [16], "data_offsets": [128, 256]}}

    def pack(header, data=body, length=None) -> bytes:
        raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        return struct.pack("<Q", len(raw) if length is None else length) + raw + data

    def mutated(kind: str) -> bytes:
        h = json.loads(json.dumps(good))
        if kind == "length > file":
            return pack(h, length=len(json.dumps(h)) + len(body) + rng.randint(1, 1 << 20))
        if kind == "length > 100 MB":
            return pack(h, length=rng.choice([100_000_001, 1 << 31, 1 << 40, (1 << 64) - 1]))
        if kind == "non-JSON header":
            return pack(bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))))
        if kind == "header not an object":
            return pack(rng.choice([b"[]", b"1", b'"x"', b"null", b"[1,2,3]"]))
        if kind == "overlapping offsets":
            s = rng.randint(1, 127)
            h["b"]["data_offsets"] = [128 - s, 256 - s]
        elif kind == "negative offsets":
            h[rng.choice("ab")]["data_offsets"][rng.randint(0, 1)] = -rng.randint(1, 1 << 40)
        elif kind == "offsets past the data":
            h["b"]["data_offsets"] = [128, 256 + rng.randint(1, 1 << 30)]
        elif kind == "reversed offsets":
            h["a"]["data_offsets"] = [128, 0]
        elif kind == "shape x dtype != bytes":
            h["a"]["shape"] = [rng.randint(1, 9), rng.randint(1, 9)]
            if h["a"]["shape"] == [4, 8]:
                h["a"]["shape"] = [3, 8]
        elif kind == "huge shape (overflow)":
            h["a"]["shape"] = [1 << rng.randint(31, 62), 1 << rng.randint(31, 62), 3]
        elif kind == "negative dimension":
            h["a"]["shape"] = [-4, -8]
        elif kind == "unknown dtype":
            h["a"]["dtype"] = rng.choice(["F128", "X", "", "pickle"])
        elif kind == "duplicate names":
            raw = json.dumps(h)[:-1] + ', "a": ' + json.dumps(h["a"]) + "}"
            return pack(raw.encode())
        elif kind == "missing field":
            del h["a"][rng.choice(["dtype", "shape", "data_offsets"])]
        elif kind == "wrong field types":
            h["a"][rng.choice(["dtype", "shape", "data_offsets"])] = rng.choice(["x", 3, None, {"k": 1}, [["1"]]])
        elif kind == "gap between tensors":
            h["b"]["data_offsets"] = [136, 264]
        elif kind == "truncated file":
            whole = pack(h)
            return whole[:rng.randint(0, len(whole) - 1)]
        elif kind == "length shorter than the JSON":
            raw = json.dumps(h).encode()
            return pack(raw, length=rng.randint(1, len(raw) - 1))
        elif kind == "metadata not strings":
            h["__metadata__"] = {"format": rng.choice([1, None, ["pt"], {"a": "b"}])}
        return pack(h)

    kinds = ["length > file", "length > 100 MB", "non-JSON header", "header not an object", "overlapping offsets",
             "negative offsets", "offsets past the data", "reversed offsets", "shape x dtype != bytes",
             "huge shape (overflow)", "negative dimension", "unknown dtype", "duplicate names", "missing field",
             "wrong field types", "gap between tensors", "truncated file", "length shorter than the JSON",
             "metadata not strings"]
    return [(kinds[i % len(kinds)], mutated(kinds[i % len(kinds)])) for i in range(n)]


def _vm_hwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def c2_child(cases_path: Path, start: int, out: Path) -> int:
    from lmlab.artifacts import load_tensors
    from lmlab.errors import ArtifactCorrupt, LmlabError

    cases = json.loads(cases_path.read_text())
    import safetensors.torch  # noqa: F401  (loaded before the baseline)

    base = _vm_hwm_kib()
    with open(out, "a", buffering=1) as f:
        f.write(json.dumps({"baseline_kib": base}) + "\n")
        for i in range(start, len(cases)):
            kind, hexdata = cases[i]
            path = cases_path.parent / "c2.safetensors"
            path.write_bytes(bytes.fromhex(hexdata))
            f.write(json.dumps({"start": i}) + "\n")
            try:
                load_tensors(path)
                outcome = "loaded"
            except ArtifactCorrupt:
                outcome = "typed"
            except LmlabError:
                outcome = "typed"
            except Exception as e:
                outcome = f"untyped {type(e).__name__}"
            f.write(json.dumps({"case": i, "kind": kind, "outcome": outcome, "hwm_kib": _vm_hwm_kib()}) + "\n")
    return 0


def campaign_c2(work: Path, quick: bool) -> list[dict]:
    n = 200 if quick else 1000
    cases = safetensors_cases(n, 5)
    cases_path = work / "c2-cases.json"
    cases_path.write_text(json.dumps([(k, b.hex()) for k, b in cases]))
    out = work / "c2.jsonl"
    out.unlink(missing_ok=True)
    start, crashes = 0, []
    while start < n:
        code = forked(c2_child, cases_path, start, out, log=work / "c2.log")
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        done = [x["case"] for x in lines if "case" in x]
        if code == 0 and (not done or done[-1] == n - 1):
            break
        started = [x["start"] for x in lines if "start" in x]
        crashes.append((started[-1], code))
        start = started[-1] + 1
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    results = [x for x in lines if "case" in x]
    base = max(x["baseline_kib"] for x in lines if "baseline_kib" in x)
    peak = max((x["hwm_kib"] for x in results), default=base)
    typed = sum(x["outcome"] == "typed" for x in results)
    loaded = [x["kind"] for x in results if x["outcome"] == "loaded"]
    untyped = sorted({f"{x['kind']}: {x['outcome']}" for x in results if x["outcome"].startswith("untyped")})
    silent = {k: loaded.count(k) for k in sorted(set(loaded))}
    return [row("C2", n, n - typed,
                f"typed rejections {typed}/{n}; crashes {len(crashes)}; loaded without error {len(loaded)} "
                f"{silent or ''}; "
                f"untyped {untyped or 0}; peak RSS {peak / 1024:.0f} MiB ({(peak - base) / 1024:.1f} MiB above the "
                f"{base / 1024:.0f} MiB of the process with torch loaded)",
                "campaign C2 (19 kinds of malformed header through lmlab.artifacts.load_tensors, in a child process)",
                peak_rss_mib=peak / 1024, rss_growth_mib=(peak - base) / 1024)]
