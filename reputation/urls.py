from django.urls import path

from reputation import api

urlpatterns = [
    path("reputation/", api.ReputationMine.as_view(), name="reputation-mine"),
    path("reputation/pools/", api.PoolScores.as_view(), name="reputation-pools"),
]
