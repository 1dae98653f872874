from django.urls import path

from marketplace import account_views, colocation_views, views
from marketplace.rentals import views as rental_views

urlpatterns = [
    path("", views.home, name="home"),
    path("dashboard/", views.dashboard, name="dashboard"),
    path("settings/api-keys/", views.api_keys, name="api-keys-page"),
    path("settings/api-keys/<int:key_id>/revoke/", views.api_key_revoke_view, name="api-key-revoke-page"),
    path("settings/wallets/", views.wallets, name="wallets-page"),
    path("settings/profile/", account_views.profile_page, name="profile-page"),
    path("demo/faucet/", account_views.demo_faucet_page, name="demo-faucet-page"),
    path("demo/wallet/", account_views.demo_wallet_page, name="demo-wallet-page"),
    path("nodes/", views.nodes_page, name="nodes-page"),
    path(
        "nodes/<int:node_id>/availability/",
        colocation_views.node_availability_page,
        name="node-availability-page",
    ),
    path("market/", views.market_page, name="market-page"),
    path("rentals/", rental_views.rentals_page, name="rentals-page"),
    path("rentals/<int:rental_id>/", rental_views.rental_page, name="rental-page"),
    path("rentals/<int:rental_id>/cancel/", rental_views.rental_cancel_page, name="rental-cancel-page"),
]
