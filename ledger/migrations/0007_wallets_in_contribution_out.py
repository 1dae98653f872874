# Payout wallets move here from the marketplace app and Proof of Contribution moves to reputation (issue 10).

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('ledger', '0006_poc_epoch_bound_numeric'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('marketplace', '0001_initial'),
    ]

    operations = [
        # State only: the tables stay where they are, under their old names (Meta.db_table).
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(
                    model_name='contributionscore',
                    name='epoch',
                ),
                migrations.RemoveField(
                    model_name='contributionscore',
                    name='user',
                ),
                migrations.CreateModel(
                    name='SiweNonce',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('nonce', models.CharField(max_length=64, unique=True)),
                        ('address', models.CharField(max_length=42)),
                        ('message', models.TextField()),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('expires_at', models.DateTimeField()),
                        ('used_at', models.DateTimeField(blank=True, null=True)),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='siwe_nonces', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'marketplace_siwenonce',
                    },
                ),
                migrations.CreateModel(
                    name='Wallet',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('address', models.CharField(help_text='EIP-55 checksummed address.', max_length=42, unique=True)),
                        ('chain_id', models.PositiveBigIntegerField()),
                        ('linked_at', models.DateTimeField(auto_now_add=True)),
                        ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='wallets', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'marketplace_wallet',
                    },
                ),
                migrations.DeleteModel(
                    name='ContributionEpoch',
                ),
                migrations.DeleteModel(
                    name='ContributionScore',
                ),
            ],
        ),
    ]
