from django.urls import path

from ledger import settlement_api as api

urlpatterns = [
    path("chain/", api.ChainInfo.as_view(), name="settlement-chain"),
    path("batches/", api.BatchList.as_view(), name="settlement-batches"),
    path("batches/<int:seq>/", api.BatchDetail.as_view(), name="settlement-batch"),
    path("data/<str:sha256>/", api.BatchDataDetail.as_view(), name="settlement-data"),
    path("transactions/<int:transaction_id>/", api.TransactionCommitment.as_view(), name="settlement-transaction"),
    path("proof/", api.Proof.as_view(), name="settlement-proof"),
    path("claimable/", api.Claimable.as_view(), name="settlement-claimable"),
    path("deposits/", api.DepositList.as_view(), name="settlement-deposits"),
    path("stake/", api.Stake.as_view(), name="settlement-stake"),
    path("alerts/", api.AlertList.as_view(), name="settlement-alerts"),
]
