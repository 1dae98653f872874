from django.urls import path

from pricing import views

urlpatterns = [
    path("market-account/", views.market_account_page, name="market-account-page"),
]
