"""Store a batch's DA copy uncompressed (PostgreSQL STORAGE EXTERNAL): same bytes, no pglz attempt.

A DA copy is mostly decimal digits and hex, which pglz cannot shrink: at 100,000 leaves (19 MB) it spent about a
second trying on every insert and stored the text as it was anyway. Only new rows are affected; reads are alike.
"""

from django.db import migrations


def _set_storage(storage: str):
    def apply(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        table = apps.get_model("ledger", "BatchData")._meta.db_table
        schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN content SET STORAGE {storage}")

    return apply


class Migration(migrations.Migration):
    dependencies = [
        ("ledger", "0011_ledger_level_stake"),
    ]

    operations = [
        migrations.RunPython(_set_storage("EXTERNAL"), _set_storage("EXTENDED")),
    ]
