"""The node's image disk quota: LRU eviction of the agent's unused images and refusals as LOST.

The unit tests drive the quota through an in-process image store; the rest run real podman (and the
docker runtime against podman's Docker-compatible API) with images built here by `podman import`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import disk_size
from agent.runtime.base import PlacementSpec, WorkloadState
from agent.runtime.disk import DiskQuotaExceeded, ImageDiskQuota, ImageLedger, ImageStore, StoredImage
from agent.runtime.docker import DockerRuntime
from agent.runtime.podman import PodmanRuntime
from agent.slicing import ContainerGpuSettings
from tests.agent.conftest import requires_podman
from tests.agent.support import Recorder

MIB = 1024**2
FAKE_GPU = ContainerGpuSettings({"NVIDIA_VISIBLE_DEVICES": "GPU-fake"}, ("GPU-fake",), fake=True, uses_mps=False)


class MemoryStore(ImageStore):
    """An image store in memory: references map to (id, size); `registry` holds what a pull would fetch."""

    def __init__(self, local=None, registry=None, *, announce: bool = True) -> None:
        self.local: dict[str, StoredImage] = dict(local or {})
        self.registry: dict[str, StoredImage] = dict(registry or {})
        self.announce = announce
        self.in_use: set[str] = set()
        self.pulls: list[str] = []
        self.removed: list[str] = []

    def local_image(self, reference):
        return self.local.get(reference)

    def images(self):
        return {image.image_id: image.size_bytes for image in self.local.values()}

    def images_in_use(self):
        return set(self.in_use)

    def agent_container_bytes(self):
        return 0

    def remove_image(self, image_id):
        if image_id in self.in_use:
            return False
        self.local = {ref: image for ref, image in self.local.items() if image.image_id != image_id}
        self.removed.append(image_id)
        return True

    def remote_size(self, reference):
        image = self.registry.get(reference)
        return image.size_bytes if image and self.announce else None

    def pull(self, reference):
        if reference not in self.registry:
            raise RuntimeError("manifest unknown")
        self.pulls.append(reference)
        self.local[reference] = self.registry[reference]


def _used(quota: ImageDiskQuota, store: MemoryStore, *references: str) -> None:
    for reference in references:
        with quota.reserved(store, reference):
            pass


def test_least_recently_used_unused_image_makes_room_and_in_use_ones_stay():
    store = MemoryStore(
        {"a": StoredImage("A", 4 * MIB), "b": StoredImage("B", 4 * MIB), "c": StoredImage("C", 4 * MIB)}
    )
    quota = ImageDiskQuota(9 * MIB)
    _used(quota, store, "b", "a")  # B is older than A
    store.in_use = set()
    _used(quota, store, "c")
    assert store.removed == ["B"] and set(quota.ledger.entries()) == {"A", "C"}

    store.in_use = {"A", "C"}
    store.local["d"] = StoredImage("D", 4 * MIB)
    with pytest.raises(DiskQuotaExceeded, match=r"quota \(9\.0 MiB\) cannot hold d"):
        _used(quota, store, "d")
    assert store.removed == ["B"]  # nothing in use was touched
    assert "D" not in quota.ledger.entries()


def test_an_image_reserved_for_a_start_is_never_evicted_before_its_container_exists():
    store = MemoryStore({"a": StoredImage("A", 4 * MIB), "b": StoredImage("B", 4 * MIB)})
    quota = ImageDiskQuota(5 * MIB)
    with quota.reserved(store, "a"), pytest.raises(DiskQuotaExceeded):
        _used(quota, store, "b")
    assert store.removed == []
    _used(quota, store, "b")  # once A's start is through (and its container gone), A makes room
    assert store.removed == ["A"]


def test_a_pull_larger_than_what_is_left_is_refused_before_pulling_when_the_registry_tells():
    store = MemoryStore({"small": StoredImage("S", 2 * MIB)}, {"huge": StoredImage("H", 50 * MIB)})
    quota = ImageDiskQuota(10 * MIB)
    store.in_use = {"S"}
    _used(quota, store, "small")
    with pytest.raises(DiskQuotaExceeded, match="huge"):
        _used(quota, store, "huge")
    assert store.pulls == []


def test_a_pull_whose_size_is_unknown_is_checked_after_pulling_and_undone():
    store = MemoryStore(registry={"huge": StoredImage("H", 50 * MIB), "ok": StoredImage("O", 3 * MIB)}, announce=False)
    quota = ImageDiskQuota(10 * MIB)
    with pytest.raises(DiskQuotaExceeded):
        _used(quota, store, "huge")
    assert store.pulls == ["huge"] and store.removed == ["H"] and "huge" not in store.local
    assert quota.ledger.entries() == {}
    _used(quota, store, "ok")
    assert set(quota.ledger.entries()) == {"O"}


def test_the_ledger_survives_a_restart_and_forgets_images_removed_by_hand(tmp_path):
    path = tmp_path / "images.json"
    store = MemoryStore({"a": StoredImage("A", MIB), "b": StoredImage("B", MIB)})
    _used(ImageDiskQuota(10 * MIB, ImageLedger(path)), store, "a", "b")
    assert set(ImageLedger(path).entries()) == {"A", "B"}
    del store.local["a"]
    quota = ImageDiskQuota(10 * MIB, ImageLedger(path))
    assert quota.usage(store) == MIB
    _used(quota, store, "b")
    assert set(ImageLedger(path).entries()) == {"B"}
    path.write_text("{not json")
    assert ImageLedger(path).entries() == {}


def test_a_new_tag_of_an_image_the_agent_owns_is_not_counted_twice():
    store = MemoryStore({"a": StoredImage("A", 4 * MIB)}, {"a-again": StoredImage("A", 4 * MIB)}, announce=False)
    quota = ImageDiskQuota(5 * MIB)
    _used(quota, store, "a", "a-again")
    assert store.pulls == ["a-again"] and store.removed == []


def test_concurrent_starts_cannot_both_take_the_last_room():
    store = MemoryStore({"a": StoredImage("A", 4 * MIB), "b": StoredImage("B", 4 * MIB)})
    quota = ImageDiskQuota(5 * MIB)
    barrier, outcomes, release = threading.Barrier(2), [], threading.Event()

    def start(reference: str) -> None:
        barrier.wait()
        try:
            with quota.reserved(store, reference):
                outcomes.append("started")
                release.wait(5)  # the container is being created
        except DiskQuotaExceeded:
            outcomes.append("refused")
            release.set()

    threads = [threading.Thread(target=start, args=(ref,)) for ref in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes) == ["refused", "started"] and store.removed == []


@pytest.mark.parametrize(
    ("text", "size"), [("50GiB", 50 * 1024**3), ("512MiB", 512 * MIB), ("1048576", MIB), ("2 TiB", 2 * 1024**4)]
)
def test_quota_flag_sizes(text, size):
    assert disk_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "-5GiB", "1KiB", "10GB", "5.5GiB", "9" * 30, "2048TiB"])
def test_quota_flag_refuses_nonsense(text):
    with pytest.raises(Exception, match="expected a size"):
        disk_size(text)


# -- Real podman ------------------------------------------------------------------------------------------


@pytest.fixture
def make_image(tmp_path) -> Iterator:
    """Return a builder of local busybox images padded with `payload` random bytes; they are removed after."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox-static is missing; `make test` installs it (scripts/install-system-deps.sh)")
    made: list[str] = []

    def make(payload: int) -> str:
        name = f"localhost/janction-quota-{uuid.uuid4().hex[:10]}:latest"
        archive = tmp_path / f"{len(made)}.tar"
        padding = tmp_path / "padding"
        padding.write_bytes(os.urandom(payload))
        with tarfile.open(archive, "w") as tar:
            tar.add(busybox, arcname="bin/busybox")
            for applet in ("sh", "sleep", "true"):
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
            tar.add(padding, arcname="padding")
        subprocess.run(
            ["podman", "import", "--quiet", "--change", "ENV PATH=/bin", str(archive), name],
            check=True,
            capture_output=True,
            timeout=120,
        )
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["podman", "rmi", "--force", "--", name], capture_output=True, check=False, timeout=60)


def _image_exists(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", "--", name], check=False, timeout=60).returncode == 0


def _spec(placement_id: str, image: str, script: str) -> PlacementSpec:
    return PlacementSpec(placement_id, image, ("sh", "-c", script), {}, FAKE_GPU)


@pytest.fixture(params=["podman", "docker"])
def quota_runtime(request, tmp_path, test_image):
    """Return a builder of a runtime (podman, or docker on podman's API) with a quota of the given bytes."""

    def build(quota_bytes: int):
        quota = ImageDiskQuota(quota_bytes, ImageLedger(Path(tmp_path) / "images.json"))
        if request.param == "podman":
            return PodmanRuntime(disk_quota=quota)
        return DockerRuntime(socket_path=request.getfixturevalue("docker_socket"), disk_quota=quota)

    return build


@requires_podman
def test_podman_quota_evicts_the_unused_image_keeps_the_running_one_and_refuses_as_lost(
    quota_runtime, make_image, request
):
    suffix = f"{request.node.callspec.id}-{uuid.uuid4().hex[:6]}"
    first, second, third, fourth = (make_image(3 * MIB) for _ in range(4))
    runtime = quota_runtime(14 * MIB)  # each image takes about 5 MiB: two fit, a third does not
    running, done, events = Recorder(), Recorder(), {}
    started = []
    try:
        runtime.start(_spec(f"q1-{suffix}", first, "sleep 60"), running)
        running.wait(lambda r: any(c.state == WorkloadState.RUNNING for c in r.changes))
        started.append(f"q1-{suffix}")
        runtime.start(_spec(f"q2-{suffix}", second, "true"), done)
        assert done.wait_finished().state == WorkloadState.EXITED
        started.append(f"q2-{suffix}")
        runtime.remove(f"q2-{suffix}")  # the second image is now unused

        events["third"] = Recorder()
        runtime.start(_spec(f"q3-{suffix}", third, "sleep 60"), events["third"])
        events["third"].wait(lambda r: any(c.state == WorkloadState.RUNNING for c in r.changes))
        started.append(f"q3-{suffix}")
        assert not _image_exists(second), "the least recently used unused image makes room"
        assert _image_exists(first) and _image_exists(third), "images in use are never removed"
        assert runtime.disk_quota.usage(runtime._images) <= 14 * MIB

        events["fourth"] = Recorder()
        runtime.start(_spec(f"q4-{suffix}", fourth, "true"), events["fourth"])
        refused = events["fourth"].wait_finished()
        assert refused.state == WorkloadState.LOST
        assert "image disk quota" in refused.message and "another node" in refused.message
        assert f"q4-{suffix}" not in [w.placement_id for w in runtime.list_workloads()]
        assert _image_exists(fourth), "an image the agent never ran is not its to remove"
    finally:
        for placement_id in started:
            runtime.stop(placement_id, grace_seconds=0)
        running.wait_finished()
        for placement_id in started:
            runtime.remove(placement_id)


@requires_podman
def test_podman_refuses_an_image_larger_than_the_whole_quota_without_creating_a_container(
    quota_runtime, make_image, request
):
    image = make_image(6 * MIB)
    runtime = quota_runtime(4 * MIB)
    placement_id = f"qbig-{request.node.callspec.id}-{uuid.uuid4().hex[:6]}"
    events = Recorder()
    runtime.start(_spec(placement_id, image, "true"), events)
    refused = events.wait_finished()
    assert [change.state for change in events.changes] == [WorkloadState.LOST]
    assert "4.0 MiB" in refused.message
    assert placement_id not in [w.placement_id for w in runtime.list_workloads()]
    assert runtime.disk_quota.ledger.entries() == {}
