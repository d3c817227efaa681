"""Random bytes never crash the decoder; a huge line costs no memory."""

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


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc for the peak RSS")
def test_512mib_line_is_skipped_in_flat_memory(tmp_path):
    """A 512 MiB file with no newline; the reader's peak RSS stays under 256 MiB."""
    p = tmp_path / "huge.txt"
    with open(p, "wb") as f:
        f.write(b"first line\n")
        block = b"x" * (1 << 20)
        for _ in range(512):
            f.write(block)
        f.write(b"\nlast line\n")
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parents[3] / 'src')!r})
from lmlab.corpus.decode import decode_chunk
from lmlab.corpus.read import Counters, ReadConfig, iter_chunks
cfg, c = ReadConfig(), Counters()
docs = [d for ch in iter_chunks([{str(p)!r}], cfg, c) for d, _ in decode_chunk(ch, cfg, c)]
assert docs == ["first line", "last line"], docs
assert c.counts["skipped_records_too_long"] == 1
# VmHWM, not ru_maxrss: the latter survives exec and so includes the forking parent (pytest)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) // 1024)
"""
    child = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    peak_mb = int(child.stdout.strip())
    assert peak_mb < 256, peak_mb
