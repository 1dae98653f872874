"""factory_boy factories shared by the tests."""

import factory
from allauth.account.models import EmailAddress
from django.contrib.auth import get_user_model

PASSWORD = "correct-horse-battery-staple"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def verified_email(self, create, extracted, **kwargs):
        if create:
            self.save()
            EmailAddress.objects.create(user=self, email=self.email, verified=True, primary=True)


def online_node(owner, *, name: str = "rig", vgpus: int = 2, price: int = 0, pool_name: str = "ada-12g"):
    """Create an enrolled, online node with one fake GPU sliced into `vgpus` free vGPUs of `pool_name`."""
    from nodes.models import Gpu, NodeState, Pool, VGpu
    from nodes.services import node_create, node_transition

    architecture, memory = pool_name.rsplit("-", 1)
    pool, _ = Pool.objects.get_or_create(
        name=pool_name, defaults={"architecture": architecture, "memory_gib": int(memory.rstrip("g"))}
    )
    node = node_create(owner=owner, name=name, reserve_price_per_hour=price).node
    gpu = Gpu.objects.create(
        node=node,
        index=0,
        uuid=f"GPU-fake-{node.pk}",
        name="RTX 4090",
        memory_bytes=pool.memory_gib * vgpus * 2**30,
        compute_capability="8.9",
        architecture=architecture,
        fake=True,
    )
    for i in range(vgpus):
        VGpu.objects.create(
            node=node,
            gpu=gpu,
            pool=pool,
            local_id=f"0:{i}",
            memory_bytes=pool.memory_gib * 2**30,
            compute_share_percent=100 // vgpus,
            enforcement="mps" if vgpus > 1 else "whole",
            fake=True,
        )
    node.has_fake_gpus = True
    node.save(update_fields=["has_fake_gpus"])
    node_transition(node=node, to_state=NodeState.ONLINE, reason="test fixture")
    return node
