"""The machine lmlab runs on: what it has, and what lmlab chooses because of it.

The one place that looks at the hardware. Everything that depends on it (training's automatic
precision, the Newton–Schulz dtype of Muon, the kernels and KV cache dtype of decoding, the
default dtype of `lmlab generate` and `lmlab serve`, the device) asks `detect()` rather than the CPU.

Found: the CPU model and vendor, its vector ISA flags (x86: AVX2, FMA, AVX-512F, AVX512-BF16,
AMX-BF16, from /proc/cpuinfo on Linux or sysctl on macOS; ARM: ASIMD, SVE, BF16), torch's own
dispatch level (`torch.backends.cpu.get_cpu_capability()`: DEFAULT, AVX2, AVX512, …), whether
torch has MKL and oneDNN and whether oneDNN offers bf16 kernels, the CUDA devices and their
compute capability, and the usable cores. Where a source is
missing (no /proc, no sysctl) the flags are empty and the choices fall back to float32.

Chosen: bf16 where the CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16 on x86, the BF16
extension on ARM); float32 elsewhere, because there bf16 is emulated: converted to float32 and
back around every product. Newton–Schulz for the quickstart BERT's 24 matrices (5 iterations,
batched by shape, 2 threads of a Sapphire Rapids Xeon) takes 3.6 ms in bf16 against 10.5 ms in
float32 with AMX, but 40 ms against 12 ms with oneDNN limited to AVX-512, and 620 ms against 10 ms
with torch and oneDNN limited to AVX2 (the whole optimizer step: benchmarks/bench_optim.py). On
CUDA: bf16 autocast where the device multiplies bf16 (compute capability ≥ 8.0), else fp16
autocast with a gradient scaler (fp16's range overflows without one; bf16 has float32's).
Everywhere: torch's one-kernel ("fused") AdamW on CPU and CUDA, the NCCL process group on CUDA and
gloo on the CPU. Attention lets torch's dispatcher pick a scaled-dot-product kernel; the model
hands it what the fast ones take (`is_causal` rather than a dense causal mask, boolean padding
masks only when there is padding), and `attention_kernels` names those it may pick here: flash
and memory-efficient from compute capability 8.0 (flash) or 5.0 (memory-efficient), the formula
("math") always. Decoding on CPU: float32 products through MKL on Intel CPUs, through oneDNN's
packed weights elsewhere (`blas_float32`); a bf16 KV cache only with AMX (`bf16_attention`).

`LMLAB_MACHINE=KIND` (or `force(KIND)` in tests) makes the CPU pretend to be one of `KINDS`, so
that each kind's choices can be exercised on any machine; the kernels torch runs do not change
(torch's own ``ATEN_CPU_CAPABILITY``, oneDNN's ``ONEDNN_MAX_CPU_ISA`` and MKL's
``MKL_ENABLE_INSTRUCTIONS`` lower those).
`force(KIND, cuda="8.0")` also pretends a CUDA device of that compute capability (tests of the
CUDA choices on a machine without one: nothing can run on it).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch

from lmlab.errors import ConfigError

ENV = "LMLAB_MACHINE"
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")  # the flags lmlab's choices read, and shows
ARM_FLAGS = ("asimd", "sve", "bf16")
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})

# A kind: the ISA flags and torch dispatch level of a class of CPU.
KINDS: dict[str, tuple[frozenset[str], str]] = {
    "generic": (frozenset(), "DEFAULT"),
    "avx2": (frozenset({"avx2", "fma"}), "AVX2"),
    "avx512": (frozenset({"avx2", "fma", "avx512f"}), "AVX512"),
    "avx512_bf16": (frozenset({"avx2", "fma", "avx512f", "avx512_bf16"}), "AVX512"),
    "amx_bf16": (frozenset({"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"}), "AVX512"),
}


@dataclass(frozen=True)
class Machine:
    # found
    cpu_model: str
    arch: str  # platform.machine(): x86_64, aarch64, arm64, …
    isa: frozenset[str]  # of X86_FLAGS / ARM_FLAGS
    torch_capability: str  # torch's CPU kernel dispatch: DEFAULT, AVX2, AVX512, NEON, SVE256, …
    mkldnn: bool  # torch was built with oneDNN (packed weights, fast bf16 products)
    mkldnn_bf16: bool  # oneDNN offers bf16 kernels here (natively or emulated with AVX-512)
    cpus: int  # cores this process may run on
    cuda_devices: int
    cuda_name: str  # of device 0; "" without CUDA
    cuda_capability: tuple[int, int] | None  # (major, minor) of device 0
    cuda_bf16: bool
    torch_version: str
    vendor: str = ""  # /proc/cpuinfo's vendor_id: GenuineIntel, AuthenticAMD, … ("" if unknown)
    mkl: bool = False  # torch was built with MKL (its BLAS for float32 products)
    forced: str = ""  # the kind the CPU fields were forced to (LMLAB_MACHINE / force), "" if detected

    # chosen
    @property
    def native_bf16(self) -> bool:
        """The CPU multiplies bf16 in hardware: bf16 autocast, weights and Newton–Schulz pay off."""
        return bool(self.isa & NATIVE_BF16_FLAGS)

    @property
    def blas_float32(self) -> bool:
        """Decoding's few-row float32 products go to MKL on the weights as they are
        (`lmlab.model.linear`): on Intel CPUs, where MKL reads the weights of a 6-layer d_model-384
        step in 1.08 ms against 1.67 ms for oneDNN's packed ones (2-core Xeon, 2 threads). Elsewhere
        oneDNN's packed float32 stays: on the 2-core EPYC MKL's one-row product took 5.16 ms against
        2.49 ms (docs/experiments.md)."""
        return self.mkl and self.vendor == "GenuineIntel"

    @property
    def packed_dtypes(self) -> frozenset[torch.dtype]:
        """The dtypes whose weights decoding packs into oneDNN's layout (`lmlab.model.linear`): bf16
        where it is native, float32 where MKL does not take it (`blas_float32`)."""
        if not self.mkldnn:
            return frozenset()
        native = self.native_bf16 and self.mkldnn_bf16
        return frozenset(({torch.bfloat16} if native else set()) | (set() if self.blas_float32 else {torch.float32}))

    @property
    def bf16_attention(self) -> bool:
        """torch's CPU attention over a KV cache is faster in bf16 than in float32: with AMX (one query
        against 272 cached positions, batch 8: 83 against 167 µs on the Xeon); without it 3–7×
        slower (EPYC-2, AVX512-BF16: 742 against 102 µs), so a bf16 model keeps a float32 cache there."""
        return "amx_bf16" in self.isa

    @property
    def device(self) -> str:
        """What `train.device=auto` means: the first CUDA device if there is one, else the CPU."""
        return "cuda" if self.cuda_devices else "cpu"

    def precision(self, device: torch.device | str) -> str:
        """Training's `train.precision=auto`: bf16, fp16 (CUDA without bf16) or fp32."""
        if torch.device(device).type == "cuda":
            return "bf16" if self.cuda_bf16 else "fp16"
        return "bf16" if self.native_bf16 else "fp32"

    def newton_schulz_dtype(self, device: torch.device | str) -> torch.dtype:
        """Muon's orthogonalisation: bf16 where it is native (3× faster than float32 with AMX),
        float32 where bf16 is emulated (3× to 60× slower than float32)."""
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if self.cuda_bf16 else torch.float32
        return torch.bfloat16 if self.native_bf16 else torch.float32

    def generation_dtype(self, device: torch.device | str = "cpu") -> str:
        """`--dtype auto` of `lmlab generate` / `lmlab serve`: bf16 weights halve the bytes each
        decode step reads, where bf16 products are native."""
        if torch.device(device).type == "cuda":
            return "bfloat16" if self.cuda_bf16 else "float32"
        return "bfloat16" if self.native_bf16 and torch.bfloat16 in self.packed_dtypes else "float32"

    def grad_scaler(self, device: torch.device | str) -> bool:
        """The automatic precision needs a gradient scaler: fp16, whose largest value is 65504."""
        return self.precision(device) == "fp16"

    def fused_adamw(self, device: torch.device | str) -> bool:
        """torch's one-kernel AdamW for parameters on `device`: one kernel for all parameters
        instead of a dozen per step (same update up to float rounding; ~3× faster on CPU)."""
        return torch.device(device).type in ("cpu", "cuda")

    def dist_backend(self, device: torch.device | str) -> str:
        """The torch.distributed backend of processes training on `device`."""
        return "nccl" if torch.device(device).type == "cuda" else "gloo"

    def attention_kernels(self, device: torch.device | str) -> tuple[str, ...]:
        """The scaled-dot-product attention kernels torch may pick on `device`, fastest first."""
        if torch.device(device).type != "cuda":
            return ("flash", "math")  # torch's CPU flash kernel (float32 and bf16), and the formula
        cc = self.cuda_capability or (0, 0)
        return tuple(k for k, ok in (("flash", cc >= (8, 0)), ("efficient", cc >= (5, 0)), ("math", True)) if ok)

    def attention_takes_gqa(self, device: torch.device | str, dtype: torch.dtype, masked: bool) -> bool:
        """A fast attention kernel takes K < H key/value heads as they are. On CUDA only flash does
        (bf16/fp16, no mask); elsewhere the keys are repeated to H heads, or the formula ("math")
        kernel would run. The CPU's kernels take them in every case."""
        if torch.device(device).type != "cuda":
            return True
        return not masked and dtype in (torch.bfloat16, torch.float16) and "flash" in self.attention_kernels(device)

    def describe(self) -> dict:
        """What was found and what was chosen, as plain JSON-able values (`lmlab info`)."""
        found = asdict(self)
        found["isa"] = sorted(self.isa)
        found["cuda_capability"] = list(self.cuda_capability) if self.cuda_capability else None
        found["threads"] = torch.get_num_threads()
        chosen = {"native_bf16": self.native_bf16, "device": self.device,
                  "precision": self.precision(self.device), "grad_scaler": self.grad_scaler(self.device),
                  "fused_adamw": self.fused_adamw(self.device), "dist_backend": self.dist_backend(self.device),
                  "attention_kernels": list(self.attention_kernels(self.device)),
                  "newton_schulz_dtype": str(self.newton_schulz_dtype(self.device)).removeprefix("torch."),
                  "generation_dtype": self.generation_dtype(self.device),
                  "packed_dtypes": sorted(str(d).removeprefix("torch.") for d in self.packed_dtypes),
                  "blas_float32": self.blas_float32, "bf16_attention": self.bf16_attention}
        return {"found": found, "chosen": chosen}


def header() -> str:
    """One line for every benchmark's output: CPU model, ISA flags, threads, torch version (and CUDA)."""
    m = detect()
    flags = " ".join(sorted(m.isa)) or "none"
    line = (f"machine: {m.cpu_model} | {m.arch} | ISA {flags} (torch {m.torch_capability}) | "
            f"threads {torch.get_num_threads()} of {m.cpus} cores | torch {m.torch_version}")
    if m.cuda_devices:
        line += f" | CUDA {m.cuda_name} sm_{''.join(map(str, m.cuda_capability or ()))} ×{m.cuda_devices}"
    if m.forced:
        line += f" | forced to {m.forced} ({ENV})"
    return line


_forced: list[tuple[str, tuple[int, int] | None]] = []  # the stack of `force` contexts: (kind, CUDA capability)


@functools.cache
def _detect(kind: str, cuda_capability: tuple[int, int] | None = None) -> Machine:
    cpu_model, flags = _cpu()
    capability = _torch_capability()
    mkldnn = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    mkldnn_bf16 = mkldnn and _mkldnn_bf16()
    if kind:
        if kind not in KINDS:
            raise ConfigError(f"{ENV}={kind!r}: unknown machine kind; use one of {', '.join(KINDS)} (or unset it)")
        flags, capability = KINDS[kind]
        mkldnn_bf16 = mkldnn and "avx512f" in flags  # oneDNN's bf16 needs AVX-512 (emulated without avx512_bf16)
    cuda = _cuda()
    if cuda_capability is not None:  # a pretended device: the choices only, nothing runs on it
        cuda = {"cuda_devices": cuda["cuda_devices"] or 1,
                "cuda_name": cuda["cuda_name"] or f"pretended sm_{cuda_capability[0]}{cuda_capability[1]}",
                "cuda_capability": cuda_capability, "cuda_bf16": cuda_capability >= (8, 0)}
        kind = f"{kind or 'detected'}, cuda {cuda_capability[0]}.{cuda_capability[1]}"
    return Machine(cpu_model=cpu_model, arch=platform.machine() or "unknown", isa=flags,
                   torch_capability=capability, mkldnn=mkldnn, mkldnn_bf16=mkldnn_bf16, cpus=_cpus(),
                   **cuda, torch_version=torch.__version__, vendor=_vendor(), mkl=_mkl(), forced=kind)


def detect() -> Machine:
    """This machine (detected once per process and kind), or the kind `force` / LMLAB_MACHINE names."""
    if _forced:
        return _detect(*_forced[-1])
    return _detect(os.environ.get(ENV, "").strip().lower())


@contextlib.contextmanager
def force(kind: str = "", cuda: str | None = None) -> Iterator[Machine]:
    """Within the block, `detect()` answers for a CPU of `kind` (one of KINDS; "" the one found)
    and, with `cuda` ("MAJOR.MINOR", e.g. "8.0"), a CUDA device of that compute capability."""
    capability = None
    if cuda is not None:
        try:
            major, minor = (int(x) for x in str(cuda).split("."))
        except ValueError:
            raise ConfigError(f"cuda={cuda!r}: give a compute capability as MAJOR.MINOR, e.g. 8.0") from None
        capability = (major, minor)
    _forced.append((kind.strip().lower(), capability))
    try:
        yield detect()
    finally:
        _forced.pop()


def info(as_json: bool = False) -> str | dict:
    """`lmlab info`: the machine as lmlab sees it, and what it chose (a table, or the JSON of `describe`)."""
    d = detect().describe()
    if as_json:
        return d
    width = max(len(k) for part in d.values() for k in part)
    lines = [header(), "", "found:"]
    lines += [f"  {k:<{width}}  {_show(v)}" for k, v in d["found"].items()]
    lines += ["", "chosen:"]
    lines += [f"  {k:<{width}}  {_show(v)}" for k, v in d["chosen"].items()]
    return "\n".join(lines)


def _show(v) -> str:
    if isinstance(v, list):
        return " ".join(map(str, v)) or "-"
    return "-" if v in ("", None) else str(v)


# -- sources -----------------------------------------------------------------------------------


def _cpu() -> tuple[str, frozenset[str]]:
    """(model name, ISA flags) from /proc/cpuinfo, or sysctl on macOS; (processor, ∅) otherwise."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    if text.strip():
        return parse_cpuinfo(text)
    if platform.system() == "Darwin":
        model = _sysctl("machdep.cpu.brand_string") or platform.processor() or "unknown"
        if platform.machine() == "arm64":
            return model, frozenset({"asimd"} | ({"bf16"} if _sysctl("hw.optional.arm.FEAT_BF16") == "1" else set()))
        words = " ".join(_sysctl(k) for k in ("machdep.cpu.features", "machdep.cpu.leaf7_features")).lower().split()
        return model, frozenset(f for f in ("avx2", "fma", "avx512f") if f in words)
    return platform.processor() or "unknown", frozenset()


def parse_cpuinfo(text: str) -> tuple[str, frozenset[str]]:
    """(model name, the flags of X86_FLAGS / ARM_FLAGS) of the first processor in /proc/cpuinfo's text."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key.strip().lower(), value.strip())
    words = set((fields.get("flags") or fields.get("features") or "").split())
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or ""
    if not model and "cpu part" in fields:  # ARM: no name, only the implementer's part number
        model = f"ARM implementer {fields.get('cpu implementer', '?')} part {fields['cpu part']}"
    return model or platform.processor() or "unknown", frozenset(words & {*X86_FLAGS, *ARM_FLAGS})


def _vendor() -> str:
    """The CPU's vendor id (GenuineIntel, AuthenticAMD, …) from /proc/cpuinfo or sysctl; "" if unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == "vendor_id":
                return value.strip()
    except OSError:
        pass
    return _sysctl("machdep.cpu.vendor") if platform.system() == "Darwin" else ""


def _mkl() -> bool:
    try:
        return bool(torch.backends.mkl.is_available())
    except (AttributeError, RuntimeError):
        return False


def _sysctl(name: str) -> str:
    try:
        return subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _torch_capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def _mkldnn_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cuda() -> dict:
    if not torch.cuda.is_available():
        return {"cuda_devices": 0, "cuda_name": "", "cuda_capability": None, "cuda_bf16": False}
    # the device's properties only: `torch.cuda.is_bf16_supported` may run a kernel, which would
    # open a context on device 0 in every process of a multi-GPU run
    props = torch.cuda.get_device_properties(0)
    capability = (props.major, props.minor)
    return {"cuda_devices": torch.cuda.device_count(), "cuda_name": props.name, "cuda_capability": capability,
            "cuda_bf16": capability >= (8, 0) or torch.version.hip is not None}
