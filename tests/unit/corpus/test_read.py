"""Reading: encodings and policies with exact counters, compression, archives, formats, bad input."""

import bz2
import gzip
import io
import json
import lzma
import random
import tarfile
import zipfile

import pytest

from lmlab.corpus.decode import decode_chunk
from lmlab.corpus.read import Counters, ReadConfig, iter_chunks
from lmlab.errors import DataError

LINES = ["第一行 first line", "second line, 中文", "三 third"]


def read(paths, **kw):
    cfg = ReadConfig(**kw)
    counters = Counters()
    docs = [d for chunk in iter_chunks([str(p) for p in paths], cfg, counters)
            for d in decode_chunk(chunk, cfg, counters)]
    return docs, counters


def texts(paths, **kw):
    return [t for t, _ in read(paths, **kw)[0]]


@pytest.mark.parametrize("encoding,prefix", [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("gb18030", b""),
                                              ("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff")])
def test_encodings_detected(tmp_path, encoding, prefix):
    p = tmp_path / "f.txt"
    p.write_bytes(prefix + "\r\n".join(LINES).encode(encoding) + b"\r\n"[: 1 if "16" not in encoding else 0])
    got = [t.rstrip("\r") for t in texts([p])]
    assert got == LINES


def test_replace_counts_every_injected_byte_and_skip_counts_lines(tmp_path):
    rng = random.Random(0)
    lines, injected, bad_lines = [], 0, 0
    for i in range(200):
        line = f"line {i} ok".encode()
        if rng.random() < 0.3:
            k = rng.randint(1, 4)
            line = line[:3] + b"\xff" * k + line[3:]  # 0xFF is never valid in UTF-8
            injected += k
            bad_lines += 1
        lines.append(line)
    p = tmp_path / "bad.txt"
    p.write_bytes(b"\n".join(lines) + b"\n")
    docs, c = read([p], encoding="utf-8", errors="replace")
    assert len(docs) == 200 and c.counts["replaced_bytes"] == injected
    assert sum(t.count("\ufffd") for t, _ in docs) == injected
    docs, c = read([p], encoding="utf-8", errors="skip")
    assert len(docs) == 200 - bad_lines and c.counts["skipped_lines_bad_encoding"] == bad_lines
    first_bad = next(i for i, line in enumerate(lines) if b"\xff" in line) + 1
    assert c.where["skipped_lines_bad_encoding"][0] == f"{p}:{first_bad}"
    with pytest.raises(DataError, match=rf"bad.txt:{first_bad}: invalid utf-8"):
        read([p], encoding="utf-8", errors="strict")


def test_compression_by_magic_bytes(tmp_path):
    data = "\n".join(LINES).encode()
    files = {"a.gz": gzip.compress(data), "b.bz2": bz2.compress(data), "c.xz": lzma.compress(data)}
    try:
        import zstandard
        files["d.zst"] = zstandard.ZstdCompressor().compress(data)
    except ImportError:
        pass
    files["e.txt"] = gzip.compress(data)  # wrong extension: the magic bytes decide
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
        assert texts([tmp_path / name]) == LINES, name


def test_truncated_gzip_is_a_clear_error(tmp_path):
    p = tmp_path / "t.gz"
    p.write_bytes(gzip.compress(("x" * 10000 + "\n").encode() * 50)[:200])
    with pytest.raises(DataError, match="t.gz: cannot decompress"):
        read([p])


def test_tar_and_zip_archives(tmp_path):
    tpath = tmp_path / "a.tar.gz"
    with tarfile.open(tpath, "w:gz") as tf:
        for i, text in enumerate(["review one<br />two", "review three"]):
            blob = text.encode()
            info = tarfile.TarInfo(f"docs/{i}.txt")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    docs, _ = read([tpath], doc_per="file")
    assert docs == [("review one<br />two", f"{tpath}!docs/0.txt"), ("review three", f"{tpath}!docs/1.txt")]
    zpath = tmp_path / "b.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("x.jsonl", '{"text": "zipped"}\n')
    assert texts([zpath]) == ["zipped"]


def test_jsonl_field_and_bad_rows(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"body": "a"}\n{not json}\n{"body": 3}\n\n{"body": ["x", "y"]}\n', encoding="utf-8")
    docs, c = read([p], field="body")
    assert docs == [("a", f"{p}:1"), ("x\ny", f"{p}:5")]
    assert c.counts["bad_rows"] == 2 and c.where["bad_rows"] == [f"{p}:2", f"{p}:3"]
    with pytest.raises(DataError, match=r"d.jsonl:2: not valid JSON"):
        read([p], field="body", bad_rows="fail")


def test_csv_quoted_newlines_survive_chunk_cuts(tmp_path):
    p = tmp_path / "t.csv"
    rows = [f'{i},"multi\nline, ""quoted"" {i}"\n' for i in range(300)]
    p.write_text("id,text\n" + "".join(rows), encoding="utf-8")
    docs, _ = read([p], field="text", chunk_bytes=1024)
    assert [t for t, _ in docs] == [f'multi\nline, "quoted" {i}' for i in range(300)]
    assert docs[1][1] == f"{p}:4"  # header on line 1, each row takes two lines


def test_tsv_and_missing_column(tmp_path):
    p = tmp_path / "t.tsv"
    p.write_text("label\ttext_a\n1\tgood\n0\n0\tbad\n", encoding="utf-8")
    docs, c = read([p], field="text_a")
    assert [t for t, _ in docs] == ["good", "bad"] and c.counts["bad_rows"] == 1
    with pytest.raises(DataError, match="no column 'text'.*label, text_a"):
        read([p])


def test_json_array_with_list_field(tmp_path):
    p = tmp_path / "poems.json"
    p.write_text(json.dumps([{"title": "t", "paragraphs": ["床前明月光，", "疑是地上霜。"]}, {"title": "u"}]),
                 encoding="utf-8")
    docs, c = read([p], field="paragraphs")
    assert docs == [("床前明月光，\n疑是地上霜。", f"{p}[0]")] and c.counts["bad_rows"] == 1


def test_json_path_reaches_nested_texts(tmp_path):
    """A SQuAD-format file: data.*.paragraphs.*.context picks every context, data.1-2.… the
    contexts of articles 1 to 2; a step that does not exist is a counted bad row (or, with
    bad_rows=fail, an error naming where)."""
    p = tmp_path / "squad.json"
    articles = [{"title": f"a{i}", "paragraphs": [{"context": f"c{i}{j}", "qas": []} for j in range(2)]}
                for i in range(4)]
    articles[3]["paragraphs"].append({"qas": []})
    p.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")
    docs, c = read([p], field="data.*.paragraphs.*.context")
    assert [t for t, _ in docs] == ["c00", "c01", "c10", "c11", "c20", "c21", "c30", "c31"]
    assert docs[3][1] == f"{p}[data.1.paragraphs.1.context]" and c.counts["bad_rows"] == 1
    assert texts([p], field="data.1-2.paragraphs.*.context") == ["c10", "c11", "c20", "c21"]
    with pytest.raises(DataError, match=r"data\.3\.paragraphs\.2\.context"):
        read([p], field="data.*.paragraphs.*.context", bad_rows="fail")
    dotted = tmp_path / "dotted.json"  # a key that holds a dot is a key, not a path
    dotted.write_text(json.dumps({"a.b": "kept"}), encoding="utf-8")
    assert texts([dotted], field="a.b") == ["kept"]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", "b", None], "n": [1, 2, 3]}), p, row_group_size=2)
    docs, c = read([p])
    assert [t for t, _ in docs] == ["a", "b"] and c.counts["bad_rows"] == 1


def test_block_and_file_modes(tmp_path):
    p = tmp_path / "b.txt"
    p.write_text("para one\nstill one\n\n\npara two\n \npara three", encoding="utf-8")
    assert texts([p], doc_per="block") == ["para one\nstill one", "para two", "para three"]
    assert read([p], doc_per="block")[0][1][1] == f"{p}:5"
    assert texts([p], doc_per="file") == ["para one\nstill one\n\n\npara two\n \npara three"]


def test_overlong_line_skipped_and_counted_without_buffering_it(tmp_path):
    p = tmp_path / "huge.txt"
    with open(p, "wb") as f:
        f.write(b"short\n")
        f.write(b"x" * 300_000 + b"\n")  # 100x the record limit, no newline inside
        f.write(b"after\n")
    docs, c = read([p], max_record_bytes=3000, chunk_bytes=1024)
    assert docs == [("short", f"{p}:1"), ("after", f"{p}:3")]
    assert c.counts["skipped_records_too_long"] == 1


def test_empty_binary_and_nul_files(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    (tmp_path / "nul.txt").write_bytes(b"text with a \x00 NUL\n")
    docs, c = read([tmp_path])
    assert [t for t, _ in docs] == ["text with a \x00 NUL"]  # the normaliser removes the NUL later
    assert c.counts["empty_files"] == 1 and c.counts["skipped_binary_files"] == 1


def test_missing_inputs_are_named(tmp_path):
    with pytest.raises(DataError, match="nope.txt: no such file"):
        read([tmp_path / "nope.txt"])
    with pytest.raises(DataError, match="matches no file"):
        read([str(tmp_path / "*.none")])


@pytest.mark.parametrize("size", [300, 4096, 70_000])
def test_high_entropy_bytes_without_nuls_are_binary_not_gb18030(tmp_path, size):
    """Compressed or encrypted data with its NUL bytes removed: the NUL rule misses it and
    GB18030, which decodes most byte pairs, would turn it into a text of rare characters."""
    for seed in range(10):
        data = random.Random(seed).randbytes(size).replace(b"\x00", b"")
        (tmp_path / f"blob{seed}.txt").write_bytes(data)
    docs, c = read([tmp_path])
    assert docs == [] and c.counts["skipped_binary_files"] == 10


def _shared_chinese_samples():
    import os
    from pathlib import Path

    root = Path(os.environ.get("LMLAB_DATA", Path(__file__).parents[4] / "shared" / "data"))
    files = sorted(root.glob("sidamingzhu/*.txt")) + [
        root / "chnsenticorp" / "dev.tsv", root / "tatoeba-cmn-eng" / "dev.tsv", root / "ca8" / "ca_translated.txt",
        root / "zh-wordsim" / "240.txt"]
    files += sorted(root.glob("chinese-poetry/*/*.json"))[:3]  # traditional characters
    return [f for f in files if f.exists()]


def test_real_gb18030_text_is_still_read(tmp_path):
    """Chinese text (simplified and traditional, the repository's fixture and the shared datasets
    where present), re-encoded in GB18030: read as GB18030, never flagged binary."""
    from pathlib import Path

    sources = [Path(__file__).parents[2] / "fixtures" / "text" / "mixed.txt", *_shared_chinese_samples()]
    expected = []
    for i, src in enumerate(sources):
        text = src.read_bytes()[: 1 << 17].decode("utf-8", errors="ignore").replace("\r\n", "\n")
        text = text.encode("gb18030", errors="ignore").decode("gb18030")
        (tmp_path / f"{i:02d}.txt").write_bytes(text.encode("gb18030"))
        expected.append(text)
    docs, c = read([tmp_path], doc_per="file")
    assert c.counts.get("skipped_binary_files", 0) == 0
    assert c.counts["encoding:gb18030"] == len(sources)
    assert [t for t, _ in docs] == [t for t in expected if t.strip()]
