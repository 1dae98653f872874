"""Declared fake GPUs."""

from __future__ import annotations

import pytest

from agent.nvml.fake import FakeGpuBackend, FakeGpuSpecError, known_model_names, parse_fake_gpu_spec


def test_spec_expands_models_and_counts_in_order():
    models = parse_fake_gpu_spec("RTX 4090:2, a100-80gb:1,L4")
    assert [model.key for model in models] == ["RTX 4090", "RTX 4090", "A100-80GB", "L4"]


def test_unknown_model_error_lists_the_known_models():
    with pytest.raises(FakeGpuSpecError) as failure:
        parse_fake_gpu_spec("RTX 9090:1")
    assert "unknown GPU model 'RTX 9090'" in str(failure.value)
    assert all(name in str(failure.value) for name in known_model_names())


@pytest.mark.parametrize(
    ("spec", "message"),
    [("RTX 4090:0", "positive integer"), ("RTX 4090:x", "positive integer"), ("L4,,L4", "empty entry"),
     ("L4:17", "at most 16")],
)  # fmt: skip
def test_bad_specs_are_explained(spec, message):
    with pytest.raises(FakeGpuSpecError, match=message):
        parse_fake_gpu_spec(spec)


def test_fake_gpus_are_flagged_and_described_like_real_ones():
    gpus = FakeGpuBackend(parse_fake_gpu_spec("RTX 4090,H100-80GB"), seed="node").gpus()
    assert [gpu.fake for gpu in gpus] == [True, True]
    assert [gpu.index for gpu in gpus] == [0, 1]
    assert gpus[0].name == "NVIDIA GeForce RTX 4090"
    assert (gpus[0].architecture, gpus[0].compute_capability_text, gpus[0].mig_capable) == ("ada", "8.9", False)
    assert (gpus[1].architecture, gpus[1].compute_capability_text, gpus[1].mig_capable) == ("hopper", "9.0", True)
    assert "1g.10gb" in [profile.name for profile in gpus[1].mig_profiles]
    assert gpus[0].memory_bytes == 24564 * 1024 * 1024
    assert gpus[0].driver_version and gpus[0].cuda_version


def test_uuids_are_deterministic_per_seed_and_distinct_across_nodes_and_indexes():
    models = parse_fake_gpu_spec("RTX 4090:2")
    first = [gpu.uuid for gpu in FakeGpuBackend(models, seed="a").gpus()]
    again = [gpu.uuid for gpu in FakeGpuBackend(models, seed="a").gpus()]
    other = [gpu.uuid for gpu in FakeGpuBackend(models, seed="b").gpus()]
    assert first == again
    assert len(set(first + other)) == 4
    assert all(uuid.startswith("GPU-") and len(uuid) == 40 for uuid in first)


def test_telemetry_is_plausible_flagged_and_varies():
    backend = FakeGpuBackend(parse_fake_gpu_spec("RTX 4090"), seed="t")
    gpu = backend.gpus()[0]
    samples = [backend.telemetry()[0] for _ in range(50)]
    for sample in samples:
        assert sample.fake and sample.uuid == gpu.uuid
        assert 0 <= sample.utilization_percent <= 100
        assert 0 < sample.memory_used_bytes < gpu.memory_bytes
        assert 25 <= sample.temperature_celsius <= 85
        assert 40_000 <= sample.power_milliwatts <= 450_000
    assert len({sample.utilization_percent for sample in samples}) > 5
    assert len({sample.power_milliwatts for sample in samples}) > 5


def test_a_container_sees_the_declared_card_unless_the_fake_gpu_is_faulty():
    models = parse_fake_gpu_spec("RTX 4090,T4")
    honest = FakeGpuBackend(models, seed="node")
    uuids = tuple(gpu.uuid for gpu in honest.gpus())
    assert honest.container_view(uuids) == ("NVIDIA GeForce RTX 4090, 24564", "Tesla T4, 15360")
    assert honest.container_view(uuids[1:]) == ("Tesla T4, 15360",)  # only the GPUs the container was given
    assert honest.container_view(("GPU-someone-else",)) == ()
    relabelled = FakeGpuBackend(models, seed="node", fault="model")
    assert relabelled.container_view(uuids) == ("Tesla T4, 15360", "NVIDIA GeForce RTX 3090, 24576")
    shrunk = FakeGpuBackend(models, seed="node", fault="memory")
    assert shrunk.container_view(uuids) == ("NVIDIA GeForce RTX 4090, 12282", "Tesla T4, 7680")
    assert [gpu.name for gpu in relabelled.gpus()] == [gpu.name for gpu in honest.gpus()]  # Hello still claims them
    with pytest.raises(FakeGpuSpecError, match="known faults: model, memory"):
        FakeGpuBackend(models, seed="node", fault="melted")
