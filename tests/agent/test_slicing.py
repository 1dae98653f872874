"""The slicing planner: vGPUs, pools and the settings that enforce a slice."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.nvml.base import GpuInfo, MigDevice
from agent.nvml.fake import KNOWN_MODELS, FakeGpuBackend, parse_fake_gpu_spec
from agent.slicing import (
    GIB,
    MIB,
    SlicingError,
    container_gpu_settings,
    parse_slicing,
    plan_gpu,
    plan_node,
    pool_name,
)


def _gpu(spec: str) -> GpuInfo:
    return FakeGpuBackend(parse_fake_gpu_spec(spec), seed="s").gpus()[0]


def _mig_gpu() -> GpuInfo:
    gpu = _gpu("A100-80GB")
    devices = (
        MigDevice(0, "MIG-aaaa", "1g.10gb", 9728 * MIB, 1),
        MigDevice(1, "MIG-bbbb", "1g.10gb", 9728 * MIB, 1),
        MigDevice(2, "MIG-cccc", "3g.40gb", 40192 * MIB, 3),
    )
    return GpuInfo(**{**gpu.__dict__, "mig_enabled": True, "mig_devices": devices, "fake": False})


@pytest.mark.parametrize(
    ("spec", "slices", "pool"),
    [
        ("RTX 4090", 1, "ada-24g"),
        ("RTX 4090", 2, "ada-12g"),
        ("RTX 4090", 4, "ada-6g"),
        ("H100-80GB", 4, "hopper-20g"),
        ("A100-80GB", 2, "ampere-40g"),
        ("T4", 1, "turing-15g"),
        ("RTX 5090", 2, "blackwell-16g"),
    ],
)
def test_pools_are_named_by_architecture_and_vgpu_memory(spec, slices, pool):
    vgpus = plan_gpu(_gpu(spec), slices)
    assert [vgpu.pool for vgpu in vgpus] == [pool] * slices


def test_whole_gpu_needs_no_mps_limits():
    gpu = _gpu("RTX 4090")
    (vgpu,) = plan_gpu(gpu, 1)
    assert vgpu.local_id == "0:0"
    assert vgpu.enforcement == "whole"
    assert vgpu.memory_bytes == gpu.memory_bytes
    assert vgpu.compute_share_percent == 100
    assert vgpu.enforcement_env == {"NVIDIA_VISIBLE_DEVICES": gpu.uuid}


def test_mps_slices_carry_thread_percentage_and_pinned_memory_limit():
    gpu = _gpu("RTX 4090")
    vgpus = plan_gpu(gpu, 2)
    assert [vgpu.local_id for vgpu in vgpus] == ["0:0", "0:1"]
    assert vgpus[0].enforcement_env == {
        "NVIDIA_VISIBLE_DEVICES": gpu.uuid,
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "50",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=12282M",
    }


@pytest.mark.parametrize("text", ["3", "0", "8", "half", "", "1g", "10gb"])
def test_parse_slicing_rejects_anything_but_1_2_4_or_a_mig_profile(text):
    with pytest.raises(SlicingError, match="1, 2 or 4"):
        parse_slicing(text)


def test_parse_slicing_accepts_counts_and_mig_profiles():
    assert parse_slicing("4") == 4
    assert parse_slicing(" 1G.10GB ") == "1g.10gb"


def test_plan_gpu_rejects_other_slice_counts():
    with pytest.raises(SlicingError, match="1, 2 or 4, got 3"):
        plan_gpu(_gpu("L4"), 3)


def test_mig_profile_on_a_gpu_without_mig_is_refused():
    with pytest.raises(SlicingError, match="does not support MIG"):
        plan_gpu(_gpu("RTX 4090"), "1g.10gb")


def test_mig_profile_on_a_mig_capable_gpu_with_mig_off_explains_how_to_enable_it():
    with pytest.raises(SlicingError, match="nvidia-smi -i 0 -mig 1"):
        plan_gpu(_gpu("A100-80GB"), "1g.10gb")


def test_mig_enabled_gpu_offers_its_mig_devices_of_the_profile():
    vgpus = plan_gpu(_mig_gpu(), "1g.10gb")
    assert [(v.local_id, v.device_uuid, v.pool, v.compute_share_percent) for v in vgpus] == [
        ("0:mig0", "MIG-aaaa", "ampere-10g", 14),
        ("0:mig1", "MIG-bbbb", "ampere-10g", 14),
    ]
    assert vgpus[0].enforcement == "mig"
    assert vgpus[0].enforcement_env == {"NVIDIA_VISIBLE_DEVICES": "MIG-aaaa"}


def test_mig_enabled_gpu_with_a_count_uses_every_mig_device():
    assert [v.pool for v in plan_gpu(_mig_gpu(), 2)] == ["ampere-10g", "ampere-10g", "ampere-39g"]


def test_unsupported_or_missing_mig_profiles_are_refused_with_the_supported_list():
    with pytest.raises(SlicingError, match=re.escape("supports 1g.10gb, 2g.20gb")):
        plan_gpu(_mig_gpu(), "1g.5gb")
    with pytest.raises(SlicingError, match=re.escape("no 2g.20gb MIG devices")):
        plan_gpu(_mig_gpu(), "2g.20gb")


def test_container_settings_for_two_slices_of_one_gpu_add_up():
    gpu = _gpu("H100-80GB")
    settings = container_gpu_settings(plan_gpu(gpu, 4)[:2])
    assert settings.uses_mps and settings.fake
    assert settings.device_uuids == (gpu.uuid,)
    assert settings.env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "50"
    assert settings.env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={2 * (gpu.memory_bytes // 4 // MIB)}M"


def test_container_settings_number_devices_in_visible_order():
    vgpus = plan_node(FakeGpuBackend(parse_fake_gpu_spec("L4:2"), seed="s").gpus(), 2)
    settings = container_gpu_settings([vgpus[0], vgpus[2]])
    uuids = settings.device_uuids
    assert settings.env["NVIDIA_VISIBLE_DEVICES"] == f"{uuids[0]},{uuids[1]}"
    limit = vgpus[0].memory_bytes // MIB
    assert settings.env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == f"0={limit}M,1={limit}M"


def test_container_settings_refuse_mixed_or_repeated_vgpus():
    gpus = FakeGpuBackend(parse_fake_gpu_spec("L40S,L4"), seed="s").gpus()
    half_l40s, whole_l4 = plan_gpu(gpus[0], 2)[0], plan_gpu(gpus[1], 1)[0]
    assert half_l40s.pool == whole_l4.pool == "ada-22g"
    with pytest.raises(SlicingError, match="cannot mix mps and whole"):
        container_gpu_settings([half_l40s, whole_l4])
    with pytest.raises(SlicingError, match="twice"):
        container_gpu_settings([whole_l4, whole_l4])


def test_pool_name_rounds_to_the_nearest_gib_and_never_below_one():
    assert pool_name("ada", int(11.5 * GIB)) == "ada-12g"
    assert pool_name("ada", int(11.49 * GIB)) == "ada-11g"
    assert pool_name("ada", 300 * MIB) == "ada-1g"


@given(model=st.sampled_from(KNOWN_MODELS), slices=st.sampled_from([1, 2, 4]), count=st.integers(1, 3))
def test_every_plan_is_equal_slices_that_fit_the_gpu(model, slices, count):
    gpus = FakeGpuBackend([model] * count, seed="p").gpus()
    vgpus = plan_node(gpus, slices)
    assert len(vgpus) == slices * count
    assert len({vgpu.local_id for vgpu in vgpus}) == len(vgpus)
    for gpu in gpus:
        own = [vgpu for vgpu in vgpus if vgpu.gpu_uuid == gpu.uuid]
        assert len({(v.memory_bytes, v.compute_share_percent, v.pool) for v in own}) == 1
        assert sum(v.memory_bytes for v in own) <= gpu.memory_bytes
        assert sum(v.compute_share_percent for v in own) == 100
        assert re.fullmatch(rf"{gpu.architecture}-\d+g", own[0].pool)
    settings = container_gpu_settings(vgpus[:slices])
    if slices > 1:
        assert re.fullmatch(r"0=\d+M", settings.env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"])
        assert settings.env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "100"
    else:
        assert "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT" not in settings.env
