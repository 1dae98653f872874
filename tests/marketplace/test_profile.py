import pytest

pytestmark = pytest.mark.django_db


def test_anonymous_caller_has_no_profile(anon_client):
    assert anon_client.get("/api/v1/profile/").status_code in (401, 403)
    assert anon_client.patch("/api/v1/profile/", {"region": "na"}, format="json").status_code in (401, 403)


def test_owner_reads_and_changes_their_profile(owner_client, owner):
    response = owner_client.patch(
        "/api/v1/profile/", {"display_name": "Ada", "region": "na", "is_provider": True}, format="json"
    )
    assert response.status_code == 200
    assert response.json() == {
        "email": owner.email,
        "display_name": "Ada",
        "region": "na",
        "is_buyer": True,
        "is_provider": True,
    }


def test_another_user_sees_only_their_own_profile(owner_client, other_client, other_user):
    owner_client.patch("/api/v1/profile/", {"display_name": "Ada"}, format="json")
    assert other_client.get("/api/v1/profile/").json()["email"] == other_user.email
    assert other_client.get("/api/v1/profile/").json()["display_name"] == ""


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"region": "mars"}, "region"),
        ({"is_buyer": False, "is_provider": False}, "is_buyer"),
        ({"display_name": "x" * 81}, "display_name"),
        ({"is_provider": "maybe"}, "is_provider"),
    ],
)
def test_bad_profile_changes_are_400_and_change_nothing(owner_client, body, field):
    response = owner_client.patch("/api/v1/profile/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["detail"]
    assert owner_client.get("/api/v1/profile/").json()["region"] == "eu"
