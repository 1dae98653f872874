"""A provider in the browser: add a node, see its enrollment command once, see fake GPUs labelled as fake."""

import pytest

from tests.factories import PASSWORD, UserFactory, online_node

pytestmark = pytest.mark.django_db(transaction=True)


def sign_in(page, user):
    page.goto("/accounts/login/")
    page.fill("input[name=login]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/")


def test_provider_adds_a_node_and_sees_fake_gpus_labelled(page, tmp_path):
    provider = UserFactory()
    online_node(provider, name="demo rig", vgpus=2, price=250_000)
    sign_in(page, provider)

    page.click("text=My nodes")
    demo = page.locator("section.node", has_text="demo rig")
    assert "FAKE GPUs" in demo.inner_text()
    assert "0.25 USDC per vGPU-hour" in demo.inner_text()
    assert demo.locator(".badge.fake").count() >= 2  # the node and its GPU

    page.fill("input[name=name]", "rig-2")
    page.click("text=Add a node")
    command = page.locator("#agent-command").inner_text()
    assert command.startswith("python3 -m agent --gateway ") and "--enroll-token jne_" in command
    page.screenshot(path=str(tmp_path / "nodes.png"), full_page=True)
    page.reload()
    assert page.locator("#agent-command").count() == 0
    assert "not enrolled yet" in page.locator("section.node", has_text="rig-2").inner_text()

    page.click("text=Market")
    pools = page.locator("#pools").inner_text()
    assert "ada-12g" in pools
