"""Set up Django for a benchmark on a throwaway PostgreSQL database (never the development one)."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def setup_bench_database(name: str = "janction_bench"):
    """Configure Django, create a fresh migrated database called `name`, and return a teardown callable."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "janction.settings")
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/janction")
    os.environ.setdefault("DJANGO_SECRET_KEY", "janction-benchmark-only-secret-key")
    import django
    from django.conf import settings

    if "postgresql" not in os.environ["DATABASE_URL"] and "postgres://" not in os.environ["DATABASE_URL"]:
        raise SystemExit("Benchmarks run on PostgreSQL: set DATABASE_URL=postgres://...")
    django.setup()
    settings.DATABASES["default"]["TEST"]["NAME"] = name
    from django.db import connection

    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)

    def teardown():
        from django.db import connections

        connections.close_all()
        connection.creation.destroy_test_db(old_name, verbosity=0)

    return teardown
