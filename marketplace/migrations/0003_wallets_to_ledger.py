# Wallets and SIWE nonces now belong to the ledger app (ledger 0007 took them over; issue 10).

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('marketplace', '0002_rentals'),
        ('ledger', '0007_wallets_in_contribution_out'),
    ]

    operations = [
        # State only: the tables stay where they are, under their old names (Meta.db_table).
        migrations.SeparateDatabaseAndState(
            database_operations=[],
            state_operations=[
                migrations.RemoveField(
                    model_name='wallet',
                    name='user',
                ),
                migrations.DeleteModel(
                    name='SiweNonce',
                ),
                migrations.DeleteModel(
                    name='Wallet',
                ),
            ],
        ),
    ]
