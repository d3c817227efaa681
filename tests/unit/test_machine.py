"""The machine module: what it reads from /proc/cpuinfo, what it chooses for each kind of CPU,
the LMLAB_MACHINE override, `lmlab info`, and that no other module looks at the hardware."""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from lmlab import machine
from lmlab.cli import main
from lmlab.errors import ConfigError

EPYC = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 7763 64-Core Processor
flags		: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni

processor	: 1
model name	: some other name
flags		: avx512f avx512_bf16
"""
SAPPHIRE = """processor	: 0
model name	: Intel(R) Xeon(R) Platinum 8480+
flags		: fpu sse avx avx2 fma avx512f avx512dq avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8
"""
GRAVITON3 = """processor	: 0
BogoMIPS	: 2100.00
Features	: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve bf16 i8mm
CPU implementer	: 0x41
CPU part	: 0xd40
"""


def test_parse_cpuinfo_reads_the_first_processor_only():
    assert machine.parse_cpuinfo(EPYC) == ("AMD EPYC 7763 64-Core Processor", frozenset({"avx2", "fma"}))
    model, flags = machine.parse_cpuinfo(SAPPHIRE)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16"}  # avx512dq, amx_tile: not read
    model, flags = machine.parse_cpuinfo(GRAVITON3)
    assert model == "ARM implementer 0x41 part 0xd40" and flags == {"asimd", "sve", "bf16"}


@pytest.mark.parametrize("text, native", [(EPYC, False), (SAPPHIRE, True), (GRAVITON3, True), ("", False)])
def test_native_bf16_follows_the_flags(text, native):
    _, flags = machine.parse_cpuinfo(text)
    m = dataclasses.replace(machine.detect(), isa=flags, forced="")
    assert m.native_bf16 is native
    assert m.precision("cpu") == ("bf16" if native else "fp32")
    assert m.newton_schulz_dtype("cpu") == (torch.bfloat16 if native else torch.float32)


def test_no_proc_cpuinfo_degrades_to_float32(monkeypatch):
    """macOS, a container without /proc, an unknown OS: no flags, every choice float32, no error."""
    def unreadable(self, *args, **kwargs):
        raise FileNotFoundError(self)

    monkeypatch.setattr(Path, "read_text", unreadable)
    monkeypatch.setattr(machine.platform, "system", lambda: "Plan9")
    model, flags = machine._cpu()
    assert flags == frozenset() and model
    m = dataclasses.replace(machine.detect(), isa=flags)
    assert not m.native_bf16 and m.precision("cpu") == "fp32" and m.generation_dtype() == "float32"
    assert m.packed_dtypes <= {torch.float32}


@pytest.mark.parametrize("arch, answers, flags", [
    ("arm64", {"hw.optional.arm.FEAT_BF16": "1"}, {"asimd", "bf16"}),
    ("arm64", {}, {"asimd"}),
    ("x86_64", {"machdep.cpu.features": "FPU SSE AVX1.0 FMA", "machdep.cpu.leaf7_features": "AVX2 BMI2"},
     {"avx2", "fma"}),
])
def test_macos_reads_sysctl(monkeypatch, arch, answers, flags):
    def unreadable(self, *args, **kwargs):
        raise FileNotFoundError(self)

    monkeypatch.setattr(Path, "read_text", unreadable)
    monkeypatch.setattr(machine.platform, "system", lambda: "Darwin")
    monkeypatch.setattr(machine.platform, "machine", lambda: arch)
    monkeypatch.setattr(machine, "_sysctl", lambda name: answers.get(name, "Apple M2" if "brand" in name else ""))
    assert machine._cpu() == ("Apple M2", frozenset(flags))


CHOICES = {  # kind → (precision, Newton–Schulz dtype, generation dtype, bf16 weights packed)
    "generic": ("fp32", torch.float32, "float32", False),
    "avx2": ("fp32", torch.float32, "float32", False),
    "avx512": ("fp32", torch.float32, "float32", False),  # bf16 there is emulated with AVX-512
    "avx512_bf16": ("bf16", torch.bfloat16, "bfloat16", True),
    "amx_bf16": ("bf16", torch.bfloat16, "bfloat16", True),
}


@pytest.mark.parametrize("kind", sorted(machine.KINDS))
def test_each_kind_chooses(kind):
    precision, ns, gen, packs_bf16 = CHOICES[kind]
    with machine.force(kind) as m:
        assert machine.detect() is m and m.forced == kind
        assert m.isa == machine.KINDS[kind][0]
        assert m.precision("cpu") == precision and m.newton_schulz_dtype("cpu") == ns
        if m.mkldnn:  # a torch with oneDNN (every x86 wheel)
            assert m.generation_dtype() == gen and (torch.bfloat16 in m.packed_dtypes) is packs_bf16
    assert machine.detect().forced == ""


def test_force_nests_and_restores():
    with machine.force("avx2"):
        with machine.force("amx_bf16"):
            assert machine.detect().native_bf16
        assert not machine.detect().native_bf16
    assert machine.detect().forced == ""


def test_environment_override(monkeypatch):
    monkeypatch.setenv("LMLAB_MACHINE", "AVX2")
    m = machine.detect()
    assert m.forced == "avx2" and m.torch_capability == "AVX2" and not m.native_bf16
    monkeypatch.setenv("LMLAB_MACHINE", "avx1024")
    with pytest.raises(ConfigError, match=r"LMLAB_MACHINE='avx1024'.*avx2"):
        machine.detect()


def test_the_training_loop_asks_the_machine():
    from lmlab.train.loop import resolve_precision

    with machine.force("avx2"):
        assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    with machine.force("avx512_bf16"):
        assert resolve_precision("auto", torch.device("cpu")) == "bf16"
        assert resolve_precision("fp32", torch.device("cpu")) == "fp32"  # an explicit choice stands


def test_cuda_choices(monkeypatch):
    cpu_only = machine.detect()
    ampere = dataclasses.replace(cpu_only, cuda_devices=1, cuda_name="A100", cuda_capability=(8, 0), cuda_bf16=True)
    volta = dataclasses.replace(ampere, cuda_name="V100", cuda_capability=(7, 0), cuda_bf16=False)
    assert ampere.device == "cuda" and ampere.precision("cuda") == "bf16"
    assert ampere.newton_schulz_dtype("cuda") == torch.bfloat16 and ampere.generation_dtype("cuda") == "bfloat16"
    assert volta.precision("cuda") == "fp16" and volta.newton_schulz_dtype("cuda") == torch.float32
    monkeypatch.setattr(machine, "detect", lambda: ampere)
    assert "CUDA A100 sm_80" in machine.header()


@pytest.mark.parametrize("capability, precision, scaler, kernels", [
    ("9.0", "bf16", False, ["flash", "efficient", "math"]),
    ("8.0", "bf16", False, ["flash", "efficient", "math"]),
    ("7.0", "fp16", True, ["efficient", "math"]),  # Volta: no bf16 products, no flash kernel
])
def test_pretended_cuda_device_chooses(capability, precision, scaler, kernels):
    """The CUDA choices on a machine without a GPU: force(cuda=...) pretends one."""
    from lmlab.train.loop import resolve_precision

    with machine.force("avx2", cuda=capability) as m:
        assert m.device == "cuda" and m.cuda_capability == tuple(map(int, capability.split(".")))
        chosen = m.describe()["chosen"]
        assert chosen == {**chosen, "device": "cuda", "precision": precision, "grad_scaler": scaler,
                          "fused_adamw": True, "dist_backend": "nccl", "attention_kernels": kernels}
        assert resolve_precision("auto", torch.device("cuda")) == precision
        assert m.generation_dtype("cuda") == ("bfloat16" if precision == "bf16" else "float32")
        assert m.precision("cpu") == "fp32" and m.dist_backend("cpu") == "gloo"  # the CPU keeps its own
        assert f"cuda {capability}" in machine.header()
    assert machine.detect().forced == ""
    with pytest.raises(ConfigError, match="MAJOR.MINOR"):
        with machine.force(cuda="sm80"):
            pass


def test_grouped_query_attention_is_given_a_kernel_that_takes_it():
    """On CUDA only flash takes K < H key/value heads (bf16/fp16, no mask); otherwise the model
    repeats them for the memory-efficient kernel. The CPU's kernels take them always."""
    bf16, fp16, fp32 = torch.bfloat16, torch.float16, torch.float32
    with machine.force(cuda="8.0") as m:
        assert m.attention_takes_gqa("cuda", bf16, masked=False) and m.attention_takes_gqa("cuda", fp16, False)
        assert not m.attention_takes_gqa("cuda", bf16, masked=True)  # padding: the memory-efficient kernel
        assert not m.attention_takes_gqa("cuda", fp32, masked=False)  # flash has no float32
        assert m.attention_takes_gqa("cpu", fp32, masked=True)
    with machine.force(cuda="7.5") as m:  # a T4: no flash kernel
        assert not m.attention_takes_gqa("cuda", fp16, masked=False)


def test_distributed_setup_asks_the_machine(monkeypatch):
    """torchrun on a (pretended) CUDA machine: each rank takes its device and the NCCL backend."""
    import torch.distributed as dist

    from lmlab.train import distributed as D

    calls = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw["device_id"])))
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(D, "_gather_peers", lambda world, device: [])  # a collective: no group here
    monkeypatch.setattr(D, "_CONTEXT", None)  # the joined group this pretend one would leave behind
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with machine.force(cuda="8.0"):
        with pytest.raises(ConfigError, match=r"CUDA device 1, and this machine has 1.*--nproc-per-node"):
            D.setup("auto")
        two_gpus = dataclasses.replace(machine.detect(), cuda_devices=2)
    monkeypatch.setattr(machine, "detect", lambda: two_gpus)
    ctx = D.setup("auto")
    assert ctx.device == torch.device("cuda", 1) and (ctx.rank, ctx.world_size) == (1, 2)
    assert calls == [("set_device", torch.device("cuda", 1)), ("nccl", torch.device("cuda", 1))]
    calls.clear()
    assert D.setup("cpu").device == torch.device("cpu") and calls == [("gloo", None)]


def test_fused_adamw_follows_the_machine(monkeypatch):
    from lmlab.model import Transformer, preset
    from lmlab.train.optim import OptimConfig, build_optimizer

    model = Transformer(preset("gpt2-tiny", vocab_size=99, d_model=24, n_heads=3, n_layers=1, d_ff=40))
    assert build_optimizer(model, OptimConfig()).defaults["fused"] is True
    assert not build_optimizer(model, OptimConfig(fused=False)).defaults["fused"]
    monkeypatch.setattr(machine.Machine, "fused_adamw", lambda self, device: False)
    assert not build_optimizer(model, OptimConfig()).defaults["fused"]


@pytest.mark.parametrize("major, minor, bf16", [(9, 0, True), (8, 6, True), (7, 5, False)])
def test_cuda_is_read_from_the_device_properties(monkeypatch, major, minor, bf16):
    from types import SimpleNamespace

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda i: SimpleNamespace(name="GPU", major=major, minor=minor))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: pytest.fail("may open a context on device 0"))
    assert machine._cuda() == {"cuda_devices": 2, "cuda_name": "GPU", "cuda_capability": (major, minor),
                               "cuda_bf16": bf16}


def test_header_names_model_flags_threads_and_torch():
    m = machine.detect()
    line = machine.header()
    assert m.cpu_model in line and f"torch {torch.__version__}" in line
    assert f"threads {torch.get_num_threads()}" in line
    assert all(flag in line for flag in m.isa)
    with machine.force("avx2"):
        assert "ISA avx2 fma" in machine.header() and "forced to avx2" in machine.header()


def test_lmlab_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and "newton_schulz_dtype" in out and "generation_dtype" in out
    assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {"found", "chosen"} and d["found"]["torch_version"] == torch.__version__
    with machine.force("avx2"):
        assert main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["found"]["forced"] == "avx2" and d["chosen"]["newton_schulz_dtype"] == "float32"


HARDWARE_PROBES = re.compile(r"/proc/cpuinfo|get_cpu_capability|_is_mkldnn_bf16_supported|cuda\.is_available|"
                             r"is_bf16_supported|get_device_capability|get_device_name|get_device_properties|sysctl")


def test_no_other_module_looks_at_the_hardware():
    src = Path(machine.__file__).parent
    offenders = [f"{p.relative_to(src)}:{i}" for p in sorted(src.rglob("*.py")) if p.name != "machine.py"
                 for i, line in enumerate(p.read_text().splitlines(), 1) if HARDWARE_PROBES.search(line)]
    assert not offenders, f"ask lmlab.machine instead: {offenders}"


@pytest.mark.parametrize("vendor, mkl, blas", [("GenuineIntel", True, True), ("GenuineIntel", False, False),
                                               ("AuthenticAMD", True, False), ("", True, False)])
def test_float32_decoding_kernels_follow_the_vendor(vendor, mkl, blas):
    """MKL on a transposed weight for float32 on Intel CPUs; oneDNN's packed float32 elsewhere."""
    m = dataclasses.replace(machine.detect(), vendor=vendor, mkl=mkl, mkldnn=True)
    assert m.blas_float32 is blas
    assert (torch.float32 in m.packed_dtypes) is not blas
    assert m.describe()["chosen"]["blas_float32"] is blas


def test_bf16_attention_only_with_amx():
    for kind in machine.KINDS:
        with machine.force(kind) as m:
            assert m.bf16_attention is (kind == "amx_bf16")


def test_vendor_is_read_where_there_is_one():
    m = machine.detect()
    if Path("/proc/cpuinfo").exists() and "vendor_id" in Path("/proc/cpuinfo").read_text(errors="replace"):
        assert m.vendor and m.vendor in Path("/proc/cpuinfo").read_text(errors="replace")
