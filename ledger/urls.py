from django.urls import path

from ledger import api

urlpatterns = [
    path("balances/", api.BalanceList.as_view(), name="ledger-balances"),
    path("entries/", api.EntryList.as_view(), name="ledger-entries"),
    path("faucet/", api.Faucet.as_view(), name="ledger-faucet"),
    path("stake/", api.StakeView.as_view(), name="ledger-stake"),
    path("stake/unstake/", api.UnstakeView.as_view(), name="ledger-unstake"),
]
