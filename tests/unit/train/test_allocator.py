"""`keep_large_buffers`: a large buffer freed and allocated again reuses its pages (counted as
minor page faults of the process), where glibc's defaults map it afresh."""

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from lmlab.train.allocator import keep_large_buffers
kept = sys.argv[1] == "keep" and keep_large_buffers()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.zeros(16 << 20)  # 64 MiB, above any glibc mmap threshold
del x
before = faults()
x = torch.zeros(16 << 20)
print(int(kept), faults() - before)
"""


def _faults(mode: str) -> tuple[bool, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    kept, faults = out.stdout.split()
    return kept == "1", int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_a_freed_large_buffer_is_reused_without_page_faults(figure):
    default_kept, default_faults = _faults("default")
    kept, kept_faults = _faults("keep")
    figure(page_faults_default=default_faults, page_faults_kept=kept_faults)
    assert kept and not default_kept
    assert default_faults >= 8000  # 64 MiB / 4 KiB pages = 16,384 pages touched afresh
    assert kept_faults < 1000
