from django.urls import path

from marketplace import api

urlpatterns = [
    path("profile/", api.ProfileDetail.as_view(), name="profile"),
    path("api-keys/", api.ApiKeyList.as_view(), name="api-keys"),
    path("api-keys/<int:key_id>/", api.ApiKeyDetail.as_view(), name="api-key-detail"),
    path("wallets/", api.WalletList.as_view(), name="wallets"),
    path("wallets/challenge/", api.WalletChallenge.as_view(), name="wallet-challenge"),
    path("wallets/<int:wallet_id>/", api.WalletDetail.as_view(), name="wallet-detail"),
]
