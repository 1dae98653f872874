"""/metrics: refused without the token or from elsewhere, the system report's figures equal the database's, and the
granian workers' request counters add up when the server runs as `make serve` starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from ledger.models import SettlementAlert
from marketplace.rentals.models import RentalState
from nodes.services import node_transition
from tests.factories import UserFactory, online_node
from tests.rentals.conftest import USDC, fund, submit
from tests.web.test_server import _free_port, _get, _wait_ready

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-test-token-0123456789abcdef"


def _samples(body: bytes) -> dict[tuple[str, tuple], float]:
    """Parse the text format into {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


@pytest.fixture
def metrics_on(settings, tmp_path):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_NETWORKS = []
    settings.METRICS_DIR = str(tmp_path / "none")  # no multiprocess folders: this process's own counters
    return settings


@pytest.mark.django_db
def test_metrics_are_a_404_until_a_token_or_network_is_set(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    assert client.get("/metrics").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Bearer wrong-token-wrong-token-wrong",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        "Bearer " + "a" * 5000,
    ],
)
def test_a_scrape_without_the_right_token_is_403(client, metrics_on, header):
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.get("/metrics", **extra)
    assert response.status_code == 403
    assert b"janction_" not in response.content and b"Bearer <METRICS_TOKEN>" in response.content


@pytest.mark.django_db
def test_the_network_allow_list_refuses_other_addresses_and_needs_the_token_too_when_both_are_set(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = ["10.0.0.0/8"]
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.5").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="not-an-address").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200

    settings.METRICS_TOKEN = TOKEN
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="192.168.1.5", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    assert client.post("/metrics", REMOTE_ADDR="10.1.2.3", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405


def test_a_short_token_or_a_bad_network_stops_the_settings_with_what_to_write(monkeypatch):
    env = {**os.environ, "METRICS_TOKEN": "short"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode != 0 and "METRICS_TOKEN must be at least 24 characters" in result.stderr
    env = {**os.environ, "METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,office"}
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert "'office' is not a network" in result.stderr
    assert ImproperlyConfigured.__name__ in result.stderr


@pytest.mark.django_db
def test_the_figures_equal_the_database(client, metrics_on, django_capture_on_commit_callbacks):
    metrics_on.PRICING_DEFAULT_ASK = "0.50"
    online_node(UserFactory(), name="a", vgpus=3, price=500_000)
    offline = online_node(UserFactory(), name="b", vgpus=1, price=500_000)
    with transaction.atomic():
        node_transition(
            node=type(offline).objects.select_for_update().get(pk=offline.pk), to_state="offline", reason="x"
        )
    buyer = UserFactory()
    fund(buyer, 100 * USDC)
    with django_capture_on_commit_callbacks(execute=True):
        submit(buyer, vgpus=2)
        submit(buyer, vgpus=1)
    SettlementAlert.objects.create(kind=SettlementAlert.Kind.POST_FAILED, message="boom")
    SettlementAlert.objects.create(
        kind=SettlementAlert.Kind.POST_FAILED, message="old", resolved_at="2026-01-01T00:00Z"
    )

    body = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content
    got = _samples(body)

    assert got[("janction_nodes", (("state", "online"),))] == 1
    assert got[("janction_nodes", (("state", "offline"),))] == 1
    assert got[("janction_pool_vgpus", (("pool", "ada-12g"), ("state", "free")))] == 3
    assert got[("janction_pool_vgpus", (("pool", "ada-12g"), ("state", "busy")))] == 0
    assert got[("janction_pool_demand_vgpus", (("pool", "ada-12g"),))] == 3
    assert got[("janction_rentals", (("state", RentalState.PENDING),))] == 2
    assert got[("janction_rentals", (("state", RentalState.RUNNING),))] == 0
    assert got[("janction_settlement_alerts_open", (("kind", "post_failed"),))] == 1
    assert got[("janction_settlement_batches", (("status", "posted"),))] == 0
    assert got[("janction_platform_balance_usdc", (("account", "market"),))] == 0
    # The scrape itself was counted by the request middleware (this process's registry).
    assert (
        REGISTRY.get_sample_value(
            "janction_http_requests_total", {"method": "GET", "route": "metrics", "status": "200"}
        )
        >= 1
    )


def test_a_finished_celery_task_is_counted(celery_eager, db):
    from marketplace.tasks import notifications_escrow_low_scan

    labels = {"task": "marketplace.notifications_escrow_low_scan", "outcome": "success"}
    before = REGISTRY.get_sample_value("janction_celery_tasks_total", labels) or 0
    notifications_escrow_low_scan.delay()
    assert REGISTRY.get_sample_value("janction_celery_tasks_total", labels) == before + 1


# -- As `make serve` runs it ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def metrics_server(django_db_setup, django_db_blocker, tmp_path_factory):
    """scripts/serve.sh with two granian workers, a metrics token and its own metrics folder."""
    db = settings.DATABASES["default"]
    port = _free_port()
    metrics_dir = tmp_path_factory.mktemp("metrics")
    (metrics_dir / "web").mkdir()
    (metrics_dir / "web" / "counter_999999.db").write_bytes(b"stale")  # a last run's file: serve.sh empties it
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "PORT": str(port),
        "WEB_WORKERS": "2",
        "DATABASE_POOL_MIN_SIZE": "1",
        "DATABASE_POOL_MAX_SIZE": "2",
        "DATABASE_APPLICATION_NAME": f"janction-metrics-test-{os.getpid()}",
        "WEB_LOG_LEVEL": "warning",
        "WEB_KILL_TIMEOUT_SECONDS": "5",
        "METRICS_TOKEN": TOKEN,
        "JANCTION_METRICS_DIR": str(metrics_dir),
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(["bash", "scripts/serve.sh"], cwd=ROOT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process)
        yield base, metrics_dir, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.django_db(transaction=True)
def test_the_served_metrics_add_up_every_worker_and_the_celery_worker_and_refuse_strangers(metrics_server):
    base, metrics_dir, env = metrics_server
    assert _get(base + "/metrics")[0] == 403
    assert _get(base + "/metrics", {"Authorization": "Bearer nope"})[0] == 403

    for _ in range(24):  # each on a fresh connection: granian spreads them over its workers
        assert _get(base + "/network/")[0] == 200
    # A Celery worker process on the same host writes into the worker folder; /metrics reads it too.
    worker = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from janction.celery import app; app.conf.task_always_eager = True; "
            "from marketplace.tasks import notifications_escrow_low_scan as t; t.delay(); t.delay()",
        ],
        cwd=ROOT,
        env={**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir / "worker")},
        capture_output=True,
        text=True,
    )
    assert worker.returncode == 0, worker.stderr

    status, body = _get(base + "/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    got = _samples(body)
    assert got[("janction_http_requests_total", (("method", "GET"), ("route", "network/"), ("status", "200")))] == 24
    assert got[("janction_http_request_duration_seconds_count", (("method", "GET"), ("route", "network/")))] == 24
    task = (("outcome", "success"), ("task", "marketplace.notifications_escrow_low_scan"))
    assert got[("janction_celery_tasks_total", task)] == 2
    assert ("janction_nodes", (("state", "online"),)) in got
    files = sorted(path.name for path in (metrics_dir / "web").glob("*.db"))
    assert files and "counter_999999.db" not in files  # the stale file went; the workers wrote their own


@pytest.mark.django_db
def test_invented_methods_and_paths_do_not_grow_the_label_set(client, metrics_on):
    for i in range(5):
        client.generic(f"X{i}METHOD", f"/no-such-path-{i}/")
        client.get(f"/no-such-path-{i}/")
    body = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    assert "X0METHOD" not in body and "no-such-path" not in body
    assert (
        REGISTRY.get_sample_value(
            "janction_http_requests_total", {"method": "other", "route": "unmatched", "status": "404"}
        )
        >= 5
    )
