from django.urls import path

from pricing import api

urlpatterns = [
    path("pools/", api.PoolList.as_view(), name="pools"),
    path("rounds/", api.RoundList.as_view(), name="rounds"),
    path("rounds/<int:round_id>/", api.RoundDetail.as_view(), name="round-detail"),
    path("price-estimate/", api.PriceEstimate.as_view(), name="price-estimate"),
    path("market-account/", api.MarketAccountView.as_view(), name="market-account"),
]
