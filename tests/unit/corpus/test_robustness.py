"""Random bytes never crash the decoder; a huge line costs no memory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.corpus.decode import decode_chunk
from lmlab.corpus.read import Chunk, Counters, Item, ReadConfig


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["utf-8", "gb18030"]), st.sampled_from(["replace", "skip"]),
       st.sampled_from(["line", "block", "file", "jsonl", "tsv"]))
def test_random_bytes_decode_to_valid_text_under_lenient_policies(data, encoding, errors, mode):
    cfg = ReadConfig(errors=errors, field="0" if mode == "tsv" else "text", header=False)
    counters = Counters()
    chunk = Chunk(0, [Item("fuzz", 1, mode, encoding, data)])
    for text, ref in decode_chunk(chunk, cfg, counters):
        text.encode("utf-8")  # valid Unicode (no lone surrogates)
        assert ref.startswith("fuzz")
    if errors == "replace" and encoding == "utf-8" and mode in ("line", "block", "file"):
        expected = sum(_bad_bytes(line) for line in data.split(b"\n"))
        assert counters.counts.get("replaced_bytes", 0) == expected


def _bad_bytes(raw: bytes) -> int:
    """Bytes a strict UTF-8 decoder rejects, found by resuming after each error."""
    n, pos = 0, 0
    while True:
        try:
            raw[pos:].decode("utf-8")
            return n
        except UnicodeDecodeError as e:
            n += e.end - e.start
            pos += e.end


# The `lmlab corpus clean` command in a child process; its peak resident memory (VmHWM, not ru_maxrss: the
# latter survives exec and so includes the forking parent, pytest) is printed last.
CLEAN = """
import json, sys
sys.path.insert(0, {src!r})
from lmlab.cli import main
code = main(["corpus", "clean", {inp!r}, "--out", {out!r}])
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"code": code, "torch": "torch" in sys.modules, "peak_mib": peak / 1024}}))
"""


def test_the_cleaner_never_imports_torch(tmp_path):
    """torch alone is ~200 MiB resident: a cleaning run that imported it could not stay in a small memory bound."""
    p = tmp_path / "small.txt"
    p.write_text("one line\nanother line\n")
    code = CLEAN.format(src=str(Path(__file__).parents[3] / "src"), inp=str(p), out=str(tmp_path / "out"))
    child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    result = json.loads(child.stdout.splitlines()[-1])
    assert result["code"] == 0 and result["torch"] is False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for the peak RSS")
def test_512mib_line_is_skipped_in_flat_memory(tmp_path, figure):
    """A 512 MiB line with no newline between two short ones, through `lmlab corpus clean`: the line is
    skipped and counted, the others kept, and the command's peak RSS stays under 256 MiB."""
    p = tmp_path / "huge.txt"
    with open(p, "wb") as f:
        f.write(b"first line\n")
        block = b"x" * (1 << 20)
        for _ in range(512):
            f.write(block)
        f.write(b"\nlast line\n")
    out = tmp_path / "out"
    code = CLEAN.format(src=str(Path(__file__).parents[3] / "src"), inp=str(p), out=str(out))
    child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    result = json.loads(child.stdout.splitlines()[-1])
    stats = json.loads((out / "stats.json").read_text())
    kept = [json.loads(line)["text"] for f in sorted(out.glob("*.jsonl")) if f.name != "duplicates.jsonl"
            for line in f.read_text().splitlines()]
    skipped = stats["read"]["counts"].get("skipped_records_too_long", 0)
    figure(peak_rss_mib=round(result["peak_mib"], 1), line_mib=512, skipped_and_counted=skipped)
    assert result["code"] == 0 and sorted(kept) == ["first line", "last line"]
    assert skipped == 1 and stats["read"]["first"]["skipped_records_too_long"] == [f"{p}:2"]
    assert result["peak_mib"] < 256, result
