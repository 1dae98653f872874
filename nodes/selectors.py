"""Node reads."""

from django.db.models import Count, Prefetch, Q, QuerySet

from nodes.models import Gpu, Node, Pool, VGpu, VGpuState


def nodes_for_owner(*, owner) -> QuerySet[Node]:
    """Return a provider's live nodes with their GPUs and vGPUs."""
    return (
        Node.objects.filter(owner=owner, deleted_at__isnull=True)
        .prefetch_related(Prefetch("gpus", queryset=Gpu.objects.order_by("index")), "vgpus__pool")
        .order_by("name")
    )


def pools_with_supply() -> QuerySet[Pool]:
    """Return every pool with its vGPU counts by state."""
    return Pool.objects.annotate(
        vgpus_total=Count("vgpus", filter=Q(vgpus__node__deleted_at__isnull=True)),
        vgpus_free=Count("vgpus", filter=Q(vgpus__state=VGpuState.FREE, vgpus__node__deleted_at__isnull=True)),
        vgpus_busy=Count(
            "vgpus",
            filter=Q(vgpus__state__in=[VGpuState.RESERVED, VGpuState.BUSY], vgpus__node__deleted_at__isnull=True),
        ),
    ).order_by("name")


def vgpus_of_node(*, node: Node) -> QuerySet[VGpu]:
    return VGpu.objects.filter(node=node).select_related("pool", "gpu").order_by("local_id")
