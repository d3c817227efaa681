"""E3: a 512 MiB line with no newline through `lmlab corpus clean`: peak RSS, and the line skipped and counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .environment import ROOT
from .table import row

BOUND_MIB = 256
# The command in a fresh interpreter (a fork of this one would count its torch as resident); VmHWM is its peak.
CLEAN = """
import json, sys
from lmlab.cli import main
code = main(["corpus", "clean", sys.argv[1], "--out", sys.argv[2]])
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "peak_mib": peak / 1024}))
"""


def campaign_e3(work: Path, quick: bool) -> list[dict]:
    huge, out = work / "e3-huge.txt", work / "e3-clean"
    with open(huge, "wb") as f:
        f.write(b"first line\n")
        block = b"x" * (1 << 20)
        for _ in range(512):
            f.write(block)
        f.write(b"\nlast line\n")
    try:
        child = subprocess.run([sys.executable, "-c", CLEAN, str(huge), str(out)], capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    finally:
        huge.unlink()
    if child.returncode != 0:
        return [row("E3", 1, 1, f"`lmlab corpus clean` failed: {child.stderr[-500:]}", "campaign E3")]
    result = json.loads(child.stdout.splitlines()[-1])
    stats = json.loads((out / "stats.json").read_text())
    kept = [json.loads(line)["text"] for f in sorted(out.glob("*.jsonl")) if f.name != "duplicates.jsonl"
            for line in f.read_text().splitlines()]
    skipped = stats["read"]["counts"].get("skipped_records_too_long", 0)
    where = stats["read"]["first"].get("skipped_records_too_long", [])
    kept_ok = sorted(kept) == ["first line", "last line"]
    failures = int(result["peak_mib"] >= BOUND_MIB) + int(skipped != 1) + int(not kept_ok)
    torch_note = "imported" if result["torch"] else "not imported"
    return [row("E3", 1, failures,
                f"peak RSS of the command {result['peak_mib']:.0f} MiB (bound {BOUND_MIB}); the 512 MiB line skipped "
                f"and counted (skipped_records_too_long = {skipped}, at {', '.join(Path(w).name for w in where)}), "
                f"the {len(kept)} short lines around it kept; torch {torch_note}",
                "campaign E3 (`lmlab corpus clean` of a file holding a 512 MiB line with no newline between two short "
                "ones, in a fresh interpreter; VmHWM)", peak_rss_mib=result["peak_mib"], skipped=skipped)]
