"""Exact integer money columns and aggregates, on PostgreSQL and on SQLite alike."""

from django.db import models
from django.db.backends.signals import connection_created
from django.dispatch import receiver


class BaseUnitsField(models.Field):
    """A signed integer of currency base units of any size (uint256 and beyond), read and written as `int`.

    PostgreSQL stores it as numeric(78, 0). SQLite keeps only 15 significant digits of numbers past 64 bits,
    which would round JCT (18 decimals) balances, so there the column holds the decimal text: comparisons
    against zero still work (a minus sign sorts before every digit), sums go through EXACT_SUM below.
    """

    description = "Integer number of currency base units"

    def db_type(self, connection):
        return "numeric(78, 0)" if connection.vendor == "postgresql" else "text"

    def from_db_value(self, value, expression, connection):
        return None if value is None else int(value)

    def to_python(self, value):
        if value is None or isinstance(value, int):
            return value
        return int(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or hasattr(value, "resolve_expression"):
            return value
        return int(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        if not prepared:
            value = self.get_prep_value(value)
        if value is None or connection.vendor == "postgresql" or hasattr(value, "resolve_expression"):
            return value
        return str(value)


class ExactSum(models.Sum):
    """SUM of a BaseUnitsField that is exact on SQLite too (there through the EXACT_SUM aggregate)."""

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="EXACT_SUM", **extra_context)


class _ExactSumAggregate:
    """SQLite aggregate: add decimal texts as Python ints and return the total as text."""

    def __init__(self) -> None:
        self.total: int | None = None

    def step(self, value) -> None:
        if value is not None:
            self.total = (self.total or 0) + int(value)

    def finalize(self) -> str | None:
        return None if self.total is None else str(self.total)


@receiver(connection_created, dispatch_uid="ledger_exact_sum")
def _register_exact_sum(sender, connection, **kwargs) -> None:
    if connection.vendor == "sqlite":
        connection.connection.create_aggregate("EXACT_SUM", 1, _ExactSumAggregate)
