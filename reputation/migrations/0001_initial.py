# Proof of Contribution moved here from the ledger app; its tables keep their names (issue 10).

import django.db.models.deletion
import django.db.models.functions.comparison
import django.db.models.lookups
import ledger.fields
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('ledger', '0007_wallets_in_contribution_out'),
    ]

    operations = [
        # State only: the tables stay where they are, under their old names (Meta.db_table).
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.CreateModel(
                    name='ContributionEpoch',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('start', models.DateTimeField(unique=True)),
                        ('end', models.DateTimeField()),
                        ('emission', ledger.fields.BaseUnitsField()),
                        ('distributed', ledger.fields.BaseUnitsField()),
                        ('total_score', ledger.fields.BaseUnitsField()),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                    ],
                    options={
                        'db_table': 'ledger_contributionepoch',
                        'ordering': ['-start'],
                        'constraints': [models.CheckConstraint(condition=models.Q(('end__gt', models.F('start'))), name='ledger_poc_epoch_positive'), models.CheckConstraint(condition=models.Q(('distributed__gte', 0), django.db.models.lookups.LessThanOrEqual(django.db.models.functions.comparison.Cast('distributed', models.DecimalField(decimal_places=0, max_digits=78)), django.db.models.functions.comparison.Cast('emission', models.DecimalField(decimal_places=0, max_digits=78)))), name='ledger_poc_epoch_distributed_bounded')],
                    },
                ),
                migrations.CreateModel(
                    name='ContributionScore',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('vgpu_milliseconds', models.PositiveBigIntegerField()),
                        ('reputation_weight', models.DecimalField(decimal_places=6, max_digits=12)),
                        ('stake', ledger.fields.BaseUnitsField()),
                        ('stake_weight', models.DecimalField(decimal_places=6, max_digits=12)),
                        ('rounds_traded', models.PositiveIntegerField()),
                        ('marginal_surplus', models.BigIntegerField()),
                        ('score', ledger.fields.BaseUnitsField()),
                        ('reward', ledger.fields.BaseUnitsField()),
                        ('ledger_idempotency_key', models.CharField(blank=True, max_length=200)),
                        ('epoch', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='scores', to='reputation.contributionepoch')),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='contribution_scores', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'ledger_contributionscore',
                        'ordering': ['epoch', '-score', 'user'],
                        'constraints': [models.UniqueConstraint(fields=('epoch', 'user'), name='ledger_poc_score_unique_user'), models.CheckConstraint(condition=models.Q(('score__gt', 0), ('reward__gte', 0), ('marginal_surplus__gte', 0)), name='ledger_poc_score_non_negative')],
                    },
                ),
            ],
        ),
    ]
