"""The node's image disk quota: what the agent's images and container layers may take on the host.

The agent's images are those its placements ran from (recorded in a small ledger with the time each was
last used); images the provider keeps for itself are neither counted nor removed. Before a start the
runtime measures the agent's images and its containers' writable layers, removes the agent's least
recently used images that no container uses to make room, and refuses the start when the quota still
cannot hold the image. A refusal is the provider's limit, not the buyer's fault: it is reported as LOST
so the platform requeues the rental on another node.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GIB = 1024**3
DEFAULT_IMAGE_DISK_QUOTA_BYTES = 100 * GIB


class DiskQuotaExceeded(RuntimeError):
    """The node's image disk quota cannot hold the image a placement needs."""


@dataclass(frozen=True)
class StoredImage:
    """An image in the engine's store: its id and size on disk."""

    image_id: str
    size_bytes: int


def format_bytes(size: int) -> str:
    """Return a size in the largest binary unit that keeps it at least 1."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class ImageLedger:
    """Image ids the agent's placements used, with when each was last used; kept in a JSON file when given."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, int] = {}
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text())
                self._entries = {str(k): int(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
            except (ValueError, TypeError, OSError):
                log.warning("image ledger %s is unreadable; starting a new one", path)

    def entries(self) -> dict[str, int]:
        """Return image id → last use in milliseconds."""
        with self._lock:
            return dict(self._entries)

    def touch(self, image_id: str) -> None:
        """Record that a placement uses the image now."""
        with self._lock:
            self._entries[image_id] = int(time.time() * 1000)
            self._save()

    def forget(self, image_id: str) -> None:
        """Drop an image the agent removed or that left the store."""
        with self._lock:
            if self._entries.pop(image_id, None) is not None:
                self._save()

    def _save(self) -> None:
        if self._path is None:
            return
        temporary = self._path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self._entries, sort_keys=True))
        os.replace(temporary, self._path)


class ImageStore(abc.ABC):
    """What the quota needs from a container engine."""

    @abc.abstractmethod
    def local_image(self, reference: str) -> StoredImage | None:
        """Return the local image a reference names, or None when it is not in the store."""

    @abc.abstractmethod
    def images(self) -> dict[str, int]:
        """Return every local image's id → size in bytes."""

    @abc.abstractmethod
    def images_in_use(self) -> set[str]:
        """Return the ids of images any container (the agent's or not) was created from."""

    @abc.abstractmethod
    def agent_container_bytes(self) -> int:
        """Return the bytes the agent's containers' writable layers take."""

    @abc.abstractmethod
    def remove_image(self, image_id: str) -> bool:
        """Remove an image unless a container uses it; return whether it is gone."""

    @abc.abstractmethod
    def remote_size(self, reference: str) -> int | None:
        """Return the registry's size for a reference before pulling, or None when it cannot tell."""

    @abc.abstractmethod
    def pull(self, reference: str) -> None:
        """Pull an image; raise RuntimeError with the engine's message when it fails."""


class ImageDiskQuota:
    """Keeps the agent's images and container layers within `quota_bytes`, one start at a time."""

    def __init__(self, quota_bytes: int = DEFAULT_IMAGE_DISK_QUOTA_BYTES, ledger: ImageLedger | None = None) -> None:
        self.quota_bytes = quota_bytes
        self.ledger = ledger or ImageLedger()
        self._lock = threading.Lock()
        self._reserved: dict[str, int] = {}  # images prepared for starts whose containers do not exist yet

    @contextlib.contextmanager
    def reserved(self, store: ImageStore, reference: str) -> Iterator[StoredImage]:
        """Prepare the image and keep it from eviction until the block has created its container."""
        image = self.prepare(store, reference)
        try:
            yield image
        finally:
            with self._lock:
                self._reserved[image.image_id] -= 1
                if not self._reserved[image.image_id]:
                    del self._reserved[image.image_id]

    def usage(self, store: ImageStore) -> int:
        """Return the bytes the agent's images and containers take now."""
        present = store.images()
        return sum(present.get(image_id, 0) for image_id in self.ledger.entries()) + store.agent_container_bytes()

    def prepare(self, store: ImageStore, reference: str) -> StoredImage:
        """Make the image available within the quota, pulling it if needed; raise DiskQuotaExceeded if it cannot fit.

        The image stays reserved (never evicted) until the caller's matching release in `reserved`.
        """
        with self._lock:
            image = store.local_image(reference)
            pulled = image is None
            if pulled:
                announced = store.remote_size(reference)
                if announced is not None:
                    self._make_room(store, reference, announced, keep="")
                try:
                    store.pull(reference)
                except RuntimeError as exc:
                    raise RuntimeError(f"pulling {reference} failed: {exc}") from exc
                image = store.local_image(reference)
                if image is None:
                    raise RuntimeError(f"{reference} is not in the store after pulling it")
            # An image the agent already owns is counted already; any other one needs its size in room.
            needed = 0 if image.image_id in self.ledger.entries() else image.size_bytes
            try:
                self._make_room(store, reference, needed, keep=image.image_id)
            except DiskQuotaExceeded:
                if pulled and needed:
                    store.remove_image(image.image_id)  # the registry did not tell the size: the pull is undone
                raise
            self.ledger.touch(image.image_id)
            self._reserved[image.image_id] = self._reserved.get(image.image_id, 0) + 1
            return image

    def _make_room(self, store: ImageStore, reference: str, needed: int, *, keep: str) -> None:
        present = store.images()
        ledger = self.ledger.entries()
        for image_id in [image_id for image_id in ledger if image_id not in present]:
            self.ledger.forget(image_id)
        owned = {image_id: last for image_id, last in ledger.items() if image_id in present}
        used = sum(present[image_id] for image_id in owned) + store.agent_container_bytes()
        if used + needed <= self.quota_bytes:
            return
        in_use = store.images_in_use()
        for image_id in sorted(owned, key=owned.__getitem__):  # least recently used first
            if image_id == keep or image_id in in_use or image_id in self._reserved:
                continue
            if store.remove_image(image_id):
                log.info("removed unused image %s (%s) to stay within the disk quota", image_id[:12], present[image_id])
                self.ledger.forget(image_id)
                used -= present[image_id]
                if used + needed <= self.quota_bytes:
                    return
        raise DiskQuotaExceeded(
            f"this node's image disk quota ({format_bytes(self.quota_bytes)}) cannot hold {reference[:120]} "
            f"({format_bytes(needed)} more): its images and containers already use {format_bytes(used)} and the "
            "rest is in use by running placements; the provider's limit, so the placement goes to another node"
        )
