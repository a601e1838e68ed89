"""Detect the training platform: CUDA, ROCm or CPU, the device, its memory budget and what it supports.

Everything is read through `torch.cuda`, `torch.version`, `/sys` and `/proc/meminfo`, so tests can mock NVIDIA, AMD and
APU devices without owning one.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

GIB = 1024**3

# Environment variable that overrides the detected per-device memory budget, in GiB.
MEMORY_BUDGET_ENV = "TRL_EXT_MEMORY_BUDGET_GIB"

# Share of system RAM an APU may use for training: the rest stays with the OS, the data loader and the page cache.
APU_RAM_SHARE = 0.75

# AMD APUs. `is_integrated` is the primary signal; this list covers drivers that leave it unset.
AMD_APU_ARCHS = {"gfx90c", "gfx1035", "gfx1036", "gfx1103", "gfx1150", "gfx1151", "gfx1152", "gfx1153"}

# RCCL has no gfx1151 (Strix Halo) support, so collective communication cannot run there:
# https://github.com/ROCm/rccl/issues/2026
NO_RCCL_ARCHS = {"gfx1151"}


@dataclass(frozen=True)
class Platform:
    """What `trl-ext` knows about the machine it trains on.

    `memory_budget` is the memory one device can give to training. It equals the driver's total on discrete GPUs. On
    APUs the driver's figure is unreliable (Strix Halo reports 62 GiB free of 120 GiB, https://github.com/ROCm/hip/issues/3892),
    so the budget comes from the GTT pool and system RAM instead. `TRL_EXT_MEMORY_BUDGET_GIB` overrides it.
    """

    backend: str  # "cuda", "rocm" or "cpu"
    device_name: str
    arch: str | None  # "sm_90", "gfx1151"; None on CPU
    device_count: int
    total_memory: int  # bytes, as the driver reports it (system RAM on CPU)
    memory_budget: int  # bytes one device can give to training
    is_apu: bool
    bf16: bool
    has_bitsandbytes: bool
    has_vllm: bool
    has_flash_attn: bool
    has_deepspeed: bool
    torch_version: str
    runtime_version: str | None  # CUDA or HIP version

    @property
    def is_gpu(self) -> bool:
        return self.backend in ("cuda", "rocm")

    @property
    def single_device_only(self) -> bool:
        """APUs are one device, and gfx1151 has no RCCL: no multi-GPU strategy applies."""
        return self.is_apu or self.arch in NO_RCCL_ARCHS

    def to_dict(self) -> dict:
        return asdict(self)


def arch_supports_bf16(arch: str | None) -> bool:
    """Whether an architecture computes in bf16 natively.

    `torch.cuda.is_bf16_supported()` is True on every ROCm GPU and, by emulation, on Turing, so it cannot decide.
    NVIDIA: sm_80 (Ampere) and newer. AMD: CDNA from gfx908 (MI100), RDNA3 (gfx11xx) and RDNA4 (gfx12xx).
    """
    if arch is None:
        return False
    if match := re.fullmatch(r"sm_(\d+)", arch):
        return int(match.group(1)) >= 80
    base = arch.split(":")[0]
    return base in {"gfx908", "gfx90a"} or bool(re.fullmatch(r"gfx(94|95)[0-9a-f]|gfx1[12][0-9a-f]{2}", base))


def package_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def read_meminfo_total(meminfo: Path) -> int | None:
    """`MemTotal` from /proc/meminfo, in bytes."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    match = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, flags=re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def read_amdgpu_pools(sysfs_root: Path) -> tuple[int, int] | None:
    """(VRAM carve-out, GTT pool) in bytes of the AMD GPU with the largest GTT pool, from amdgpu's sysfs files."""
    best = None
    for device in sorted((sysfs_root / "class" / "drm").glob("card*/device")):
        try:
            if device.joinpath("vendor").read_text().strip() != "0x1002":
                continue
            gtt = int(device.joinpath("mem_info_gtt_total").read_text())
            vram = int(device.joinpath("mem_info_vram_total").read_text())
        except (OSError, ValueError):
            continue
        if best is None or gtt > best[1]:
            best = (vram, gtt)
    return best


def apu_memory_budget(reported: int, ram_total: int | None, pools: tuple[int, int] | None) -> int:
    """Memory an APU can give to training.

    PyTorch allocates from the BIOS carve-out (VRAM) and from GTT, system RAM mapped into the GPU's address space
    (https://rocm.docs.amd.com/en/latest/how-to/system-optimization/strixhalo.html). GTT defaults to about half of RAM
    and can be raised with `ttm.pages_limit`, but RAM is shared with the OS: cap it at 75% of RAM.
    """
    if ram_total is None:
        return reported
    ram_cap = int(APU_RAM_SHARE * ram_total)
    if pools is None:  # NVIDIA integrated GPUs (Jetson, GB10) report the shared pool
        return min(reported, ram_cap)
    vram, gtt = pools
    return max(vram, min(gtt, ram_cap))


def _budget_override() -> int | None:
    value = os.environ.get(MEMORY_BUDGET_ENV)
    if not value:
        return None
    try:
        return int(float(value) * GIB)
    except ValueError as error:
        raise ValueError(f"{MEMORY_BUDGET_ENV}={value!r} is not a number of GiB (e.g. 96)") from error


def detect_platform(sysfs_root: Path = Path("/sys"), meminfo: Path = Path("/proc/meminfo")) -> Platform:
    """Describe device 0 (all visible devices are assumed alike) and the optional packages installed."""
    ram_total = read_meminfo_total(meminfo)
    packages = {
        "has_bitsandbytes": package_available("bitsandbytes"),
        "has_vllm": package_available("vllm"),
        "has_flash_attn": package_available("flash_attn"),
        "has_deepspeed": package_available("deepspeed"),
    }
    override = _budget_override()
    if not torch.cuda.is_available():
        total = ram_total or 0
        return Platform(
            backend="cpu",
            device_name="cpu",
            arch=None,
            device_count=0,
            total_memory=total,
            memory_budget=override or total,
            is_apu=False,
            bf16=False,
            torch_version=torch.__version__,
            runtime_version=None,
            **packages,
        )

    hip = torch.version.hip
    props = torch.cuda.get_device_properties(0)
    if hip:
        arch = props.gcnArchName.split(":")[0]
        is_apu = bool(getattr(props, "is_integrated", False)) or arch in AMD_APU_ARCHS
        pools = read_amdgpu_pools(sysfs_root) if is_apu else None
    else:
        arch = f"sm_{props.major}{props.minor}"
        is_apu = bool(getattr(props, "is_integrated", False))
        pools = None
    budget = apu_memory_budget(props.total_memory, ram_total, pools) if is_apu else props.total_memory
    return Platform(
        backend="rocm" if hip else "cuda",
        device_name=props.name,
        arch=arch,
        device_count=torch.cuda.device_count(),
        total_memory=props.total_memory,
        memory_budget=override or budget,
        is_apu=is_apu,
        bf16=arch_supports_bf16(arch),
        torch_version=torch.__version__,
        runtime_version=hip or torch.version.cuda,
        **packages,
    )


def hub_kernels_unavailable(timeout: float = 3.0) -> bool:
    """Whether transformers' hub kernels could not be fetched: the Hub is offline (`HF_HUB_OFFLINE`) or does not
    answer within `timeout` seconds. Without the `kernels` package nothing would be fetched, so no network call."""
    from huggingface_hub import constants, get_session

    if constants.is_offline_mode():
        return True
    if not package_available("kernels"):
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=timeout)
    except Exception:  # any failure to connect means the kernels cannot be fetched either
        return True
    return False


def hub_kernel_kwargs(unavailable: bool | None = None) -> dict:
    """`from_pretrained` keyword arguments that keep hub kernels only where they can be fetched.

    transformers 5 kernelizes a model on load by default on GPUs, downloading kernels (`kernels-community/...`) from
    the Hub; offline that fails at model load, the embedded default included. This asks the model's loading, not the
    process (`USE_HUB_KERNELS`), to go without them. `unavailable=None` checks (`hub_kernels_unavailable`).
    """
    if unavailable is None:
        unavailable = hub_kernels_unavailable()
    return {"use_kernels": False} if unavailable else {}
