from django.urls import path

from ledger import api

urlpatterns = [
    path("balances/", api.BalanceList.as_view(), name="ledger-balances"),
    path("entries/", api.EntryList.as_view(), name="ledger-entries"),
    path("faucet/", api.Faucet.as_view(), name="ledger-faucet"),
]
