from django.urls import path

from marketplace import account_views, chain_views, colocation_views, market_views, provider_views, report_views, views
from marketplace.notifications import views as notification_views
from marketplace.rentals import action_views as rental_actions
from marketplace.rentals import views as rental_views

urlpatterns = [
    path("", market_views.home, name="home"),
    path("network/", market_views.network_fragment, name="network-fragment"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("settings/api-keys/", views.api_keys, name="api-keys-page"),
    path("settings/api-keys/<int:key_id>/revoke/", views.api_key_revoke_view, name="api-key-revoke-page"),
    path("settings/wallets/", views.wallets, name="wallets-page"),
    path("settings/profile/", account_views.profile_page, name="profile-page"),
    path(
        "settings/notifications/",
        notification_views.notification_preferences_save,
        name="notification-preferences",
    ),
    path("notifications/", notification_views.notifications_page, name="notifications-page"),
    path("notifications/bell/", notification_views.notifications_bell, name="notifications-bell"),
    path("notifications/read/", notification_views.notifications_read_all, name="notifications-read-all"),
    path("notifications/<int:notification_id>/", notification_views.notification_page, name="notification-page"),
    path("demo/faucet/", account_views.demo_faucet_page, name="demo-faucet-page"),
    path("demo/wallet/", account_views.demo_wallet_page, name="demo-wallet-page"),
    path("nodes/", views.nodes_page, name="nodes-page"),
    path(
        "nodes/<int:node_id>/availability/",
        colocation_views.node_availability_page,
        name="node-availability-page",
    ),
    path("nodes/<int:node_id>/ask/", provider_views.node_ask_page, name="node-ask-page"),
    path("nodes/<int:node_id>/drain/", provider_views.node_drain_page, name="node-drain-page"),
    path("payouts/", provider_views.payouts_page, name="payouts-page"),
    path("payouts/claim/", provider_views.payout_claim_page, name="payout-claim-page"),
    path("stake/", chain_views.stake_page, name="stake-page"),
    path("stake/ledger/", chain_views.ledger_stake_action, name="ledger-stake-action"),
    path("deposit/", chain_views.deposit_page, name="deposit-page"),
    path("market/", market_views.market_page, name="market-page"),
    path("market/rounds/<int:round_id>/", market_views.round_page, name="round-page"),
    path("statement/", market_views.statement_page, name="statement-page"),
    path("statement.csv", market_views.statement_csv, name="statement-csv"),
    path("statement.pdf", report_views.statement_pdf, name="statement-pdf"),
    path("reports/provider/", report_views.provider_report_page, name="provider-report-page"),
    path("reports/system/", report_views.system_report_page, name="system-report-page"),
    path("rentals/", rental_views.rentals_page, name="rentals-page"),
    path("rentals/<int:rental_id>/", rental_views.rental_page, name="rental-page"),
    path("rentals/<int:rental_id>/cancel/", rental_actions.rental_cancel_confirm_page, name="rental-cancel-page"),
    path("rentals/<int:rental_id>/extend/", rental_actions.rental_extend_page, name="rental-extend-page"),
    path("rentals/<int:rental_id>/gpu/", rental_actions.rental_gpu_fragment, name="rental-gpu-fragment"),
]
