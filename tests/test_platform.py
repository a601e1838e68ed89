"""Platform detection with mocked NVIDIA, AMD and APU devices."""

from types import SimpleNamespace

import pytest
import torch

from trl_ext.platform import detect as platform_module
from trl_ext.platform.detect import GIB, MEMORY_BUDGET_ENV, arch_supports_bf16, detect_platform


@pytest.fixture
def meminfo(tmp_path):
    def write(ram_gib: float):
        path = tmp_path / "meminfo"
        path.write_text(f"MemTotal:       {int(ram_gib * 1024 * 1024)} kB\nMemFree:        1024 kB\n")
        return path

    return write


@pytest.fixture
def sysfs(tmp_path):
    def write(vram_gib: float, gtt_gib: float, vendor: str = "0x1002"):
        device = tmp_path / "sys" / "class" / "drm" / "card1" / "device"
        device.mkdir(parents=True)
        device.joinpath("vendor").write_text(vendor + "\n")
        device.joinpath("mem_info_vram_total").write_text(f"{int(vram_gib * GIB)}\n")
        device.joinpath("mem_info_gtt_total").write_text(f"{int(gtt_gib * GIB)}\n")
        return tmp_path / "sys"

    return write


@pytest.fixture
def device(monkeypatch):
    """Make torch.cuda report one kind of device."""

    def install(name, total_gib, *, sm=None, gcn=None, integrated=False, count=1):
        props = SimpleNamespace(
            name=name,
            total_memory=int(total_gib * GIB),
            major=sm[0] if sm else 9,
            minor=sm[1] if sm else 4,
            is_integrated=integrated,
            gcnArchName=gcn or "",
        )
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: props)
        monkeypatch.setattr(torch.version, "hip", "6.4.1" if gcn else None)
        monkeypatch.setattr(torch.version, "cuda", None if gcn else "12.8")

    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    return install


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("sm_75", False),  # Turing: is_bf16_supported() says True by emulation
        ("sm_80", True),
        ("sm_90", True),
        ("sm_120", True),
        ("gfx906", False),
        ("gfx908", True),
        ("gfx90a:sramecc+:xnack-", True),
        ("gfx942", True),
        ("gfx950", True),
        ("gfx1030", False),  # RDNA2
        ("gfx1100", True),
        ("gfx1151", True),
        ("gfx1201", True),
        (None, False),
    ],
)
def test_bf16_by_architecture(arch, expected):
    assert arch_supports_bf16(arch) is expected


def test_cpu(monkeypatch, meminfo):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    found = detect_platform(meminfo=meminfo(31.3))
    assert (found.backend, found.device_count, found.bf16, found.is_gpu) == ("cpu", 0, False, False)
    assert found.memory_budget == found.total_memory == int(31.3 * 1024 * 1024) * 1024


def test_nvidia_h100(device, meminfo):
    device("NVIDIA H100 80GB HBM3", 79.2, sm=(9, 0), count=8)
    found = detect_platform(meminfo=meminfo(2000))
    assert (found.backend, found.arch, found.device_count, found.runtime_version) == ("cuda", "sm_90", 8, "12.8")
    assert found.bf16 and not found.is_apu and not found.single_device_only
    assert found.memory_budget == found.total_memory == int(79.2 * GIB)


def test_nvidia_t4_gets_no_bf16(device, meminfo):
    device("Tesla T4", 14.6, sm=(7, 5))
    assert not detect_platform(meminfo=meminfo(64)).bf16


def test_amd_mi300x(device, meminfo, sysfs):
    device("AMD Instinct MI300X", 191.5, gcn="gfx942:sramecc+:xnack-")
    found = detect_platform(sysfs_root=sysfs(191.5, 500), meminfo=meminfo(2000))
    assert (found.backend, found.arch, found.runtime_version) == ("rocm", "gfx942", "6.4.1")
    assert found.bf16 and not found.is_apu
    assert found.memory_budget == int(191.5 * GIB)  # a discrete GPU's budget is its own memory, not GTT


def test_amd_rdna2_gets_fp16(device, meminfo):
    device("AMD Radeon RX 6800", 16, gcn="gfx1030")
    assert not detect_platform(meminfo=meminfo(64)).bf16


def test_strix_halo_budget_comes_from_gtt_and_ram(device, meminfo, sysfs):
    # hipMemGetInfo misreports on Strix Halo (62.47 GiB total: https://github.com/ROCm/hip/issues/3892); with a
    # 512 MiB carve-out and GTT raised to 120 GiB, 75% of 128 GiB of RAM is the cap
    device("AMD Radeon 8060S", 62.47, gcn="gfx1151", integrated=True)
    found = detect_platform(sysfs_root=sysfs(0.5, 120), meminfo=meminfo(128))
    assert found.is_apu and found.single_device_only and found.bf16
    assert found.total_memory == int(62.47 * GIB)
    assert found.memory_budget == int(0.75 * 128 * GIB)


def test_strix_halo_default_gtt_is_half_the_ram(device, meminfo, sysfs):
    device("AMD Radeon 8060S", 62.47, gcn="gfx1151", integrated=True)
    assert detect_platform(sysfs_root=sysfs(0.5, 64), meminfo=meminfo(128)).memory_budget == 64 * GIB


def test_strix_halo_large_carve_out_counts(device, meminfo, sysfs):
    # 96 GiB reserved in the BIOS leaves 32 GiB of RAM to Linux; the carve-out is the larger pool
    device("AMD Radeon 8060S", 96, gcn="gfx1151", integrated=False)  # flag unset: the architecture tells
    found = detect_platform(sysfs_root=sysfs(96, 16), meminfo=meminfo(31))
    assert found.is_apu and found.memory_budget == 96 * GIB


def test_nvidia_integrated_gpu_is_capped_by_ram(device, meminfo):
    device("NVIDIA GB10", 119.7, sm=(12, 1), integrated=True)
    found = detect_platform(meminfo=meminfo(119.7))
    assert found.is_apu and found.memory_budget == int(0.75 * int(119.7 * 1024 * 1024) * 1024)


def test_budget_override(device, meminfo, monkeypatch):
    device("NVIDIA GeForce RTX 4090", 23.6, sm=(8, 9))
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "20")
    assert detect_platform(meminfo=meminfo(64)).memory_budget == 20 * GIB
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "twenty")
    with pytest.raises(ValueError, match="not a number of GiB"):
        detect_platform(meminfo=meminfo(64))


def test_optional_packages_are_reported(device, meminfo, monkeypatch):
    device("NVIDIA A100-SXM4-80GB", 79.1, sm=(8, 0))
    monkeypatch.setattr(platform_module, "package_available", lambda name: name in ("vllm", "bitsandbytes"))
    found = detect_platform(meminfo=meminfo(512))
    assert (found.has_vllm, found.has_bitsandbytes, found.has_flash_attn, found.has_deepspeed) == (
        True,
        True,
        False,
        False,
    )
