"""A campaign's result row, the Markdown table of every checklist item, and the reports written from a run."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from .environment import REPORTS
from .items import ITEMS, NOT_MEASURED


def row(item: str, trials, failures, lost: str, by: str, **figures) -> dict:
    return {"id": item, "trials": trials, "failures": failures, "lost": lost, "by": by, "figures": figures}


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma") if f in flags]
    return {"cpu": cpu, "isa": isa, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "gpu": torch.cuda.is_available()}


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict]) -> str:
    by_id: dict[str, list[dict]] = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    lines = ["| id | item | trials | failures | what was lost | measured by |", "|---|---|---|---|---|---|"]
    for item, name in ITEMS.items():
        found = by_id.get(item, [])
        if not found:
            reason = NOT_MEASURED.get(item) or "not measured in this run (campaign not selected)"
            lines.append(f"| {item} | {name} | – | – | {cell(reason)} | – |")
            continue
        for r in found:
            lines.append(f"| {item} | {name} | {r['trials']} | {r['failures']} | {cell(r['lost'])} | {cell(r['by'])} |")
    return "\n".join(lines)


def write_reports(rows: list[dict], times: dict, quick: bool, only: str) -> str:
    """The report as Markdown (returned), written to reports/reliability-bench[-quick].md with the rows
    in the .json beside it."""
    info = machine()
    head = (f"Reliability checklist, {'quick' if quick else 'full'} run: "
            f"`python benchmarks/bench_reliability.py{' --quick' if quick else ''}"
            f"{' --only ' + only if only else ''}`\n\n"
            f"Machine: {info['cpu']} ({', '.join(info['isa'])}), {info['cores']} cores, torch {info['torch']} "
            f"with {info['torch_threads']} thread, Python {info['python']}, "
            f"{'a CUDA GPU' if info['gpu'] else 'no GPU'}. Campaign wall times (s): {times}\n\n")
    text = head + table([r for r in rows if r["id"] != "pytest"])
    pytest_row = next((r for r in rows if r["id"] == "pytest"), None)
    if pytest_row:
        text += (f"\n\npytest: {pytest_row['trials']} test cases run for the table, {pytest_row['failures']} failed "
                 f"({pytest_row['lost']}).")
    suffix = "-quick" if quick else ""
    REPORTS.mkdir(exist_ok=True)
    (REPORTS / f"reliability-bench{suffix}.md").write_text(text + "\n")
    (REPORTS / f"reliability-bench{suffix}.json").write_text(
        json.dumps({"machine": info, "times_s": times, "quick": quick, "rows": rows}, indent=1, default=str))
    return text
