from django.db import migrations, models


def record_old_parameters(apps, schema_editor):
    """Store the ceiling old VCG rounds were cleared against as their parameter."""
    MarketRound = apps.get_model("pricing", "MarketRound")
    for market_round in MarketRound.objects.filter(mechanism="vcg").only("pk", "inputs").iterator():
        max_cost = (market_round.inputs or {}).get("max_cost")
        MarketRound.objects.filter(pk=market_round.pk).update(parameters={"max_cost": max_cost})


class Migration(migrations.Migration):
    dependencies = [("pricing", "0001_initial")]

    operations = [
        # Every round stored before this migration was cleared with plain VCG (and the adjustment).
        migrations.AddField(model_name="marketround", name="mechanism", field=models.CharField(default="vcg", max_length=32)),
        migrations.AlterField(
            model_name="marketround", name="mechanism", field=models.CharField(default="trade-reduction", max_length=32)
        ),
        migrations.AddField(model_name="marketround", name="parameters", field=models.JSONField(default=dict)),
        migrations.RunPython(record_old_parameters, migrations.RunPython.noop),
    ]
