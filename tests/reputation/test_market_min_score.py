"""The market page's node list and the offers API (pools' score distributions) filter by a minimum node score."""

import pytest
from django.test import Client

from reputation.models import EvidenceKind
from reputation.services import evidence_record
from tests.factories import UserFactory, online_node


def _evidence(node, kind: str, n: int) -> None:
    for i in range(n):
        evidence_record(kind=kind, subject_kind="node", node_id=node.pk, source="t", source_key=f"{kind}{node.pk}{i}")


@pytest.fixture
def nodes(db):
    good = online_node(UserFactory(), name="good", vgpus=1)
    _evidence(good, EvidenceKind.PLACEMENT_COMPLETED, 8)  # 9 / 10 = 0.9
    new = online_node(UserFactory(), name="new", vgpus=1)  # cold start 0.5
    bad = online_node(UserFactory(), name="bad", vgpus=1)
    _evidence(bad, EvidenceKind.PLACEMENT_LOST, 1)  # 1 / 5 = 0.2
    return good, new, bad


def test_the_market_page_lists_only_nodes_at_or_above_the_minimum_and_shows_each_score(nodes):
    client = Client()
    page = client.get("/market/").content.decode()
    assert page.count("<code>") >= 3 and "0.90" in page and "0.50" in page and "0.20" in page
    filtered = client.get("/market/", {"min_score": "0.5"})
    assert filtered.status_code == 200
    text = filtered.content.decode()
    assert "0.90" in text and "0.50" in text and ">0.20<" not in text
    assert 'value="0.5"' in text  # the filter is kept in the form


@pytest.mark.parametrize("value", ["1.5", "-0.1", "abc", "NaN", "inf", "0.1234567", "9" * 50])
def test_a_bad_minimum_score_on_the_market_page_is_a_400_naming_the_filter(nodes, value):
    response = Client().get("/market/", {"min_score": value})
    assert response.status_code == 400
    assert "Minimum score: min_score is" in response.content.decode() and "from 0 to 1" in response.content.decode()


def test_the_offers_api_filters_the_nodes_by_minimum_score_and_refuses_a_bad_one(nodes):
    good = nodes[0]
    client = Client()
    everyone = client.get("/api/v1/reputation/pools/").json()
    assert sorted(item["node"] for item in everyone[0]["node_scores"]) == sorted(n.pk for n in nodes)
    top = client.get("/api/v1/reputation/pools/", {"min_score": "0.6"}).json()
    assert [item["node"] for item in top[0]["node_scores"]] == [good.pk]
    assert top[0]["nodes"] == 3 and top[0]["lowest"] == "0.200000"  # the distribution still covers every node
    refused = client.get("/api/v1/reputation/pools/", {"min_score": "2"})
    assert refused.status_code == 400
    assert refused.json()["detail"] == {"filter": "min_score"} and "from 0 to 1" in refused.json()["message"]
