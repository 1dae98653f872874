"""URL routes: pages, accounts, the REST API under /api/v1/, its schema and docs, the admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from janction.metrics import metrics_view

api_v1 = [
    path("", include("marketplace.api_urls")),
    path("ledger/", include("ledger.urls")),
    path("", include("nodes.urls")),
    path("", include("pricing.urls")),
    path("", include("marketplace.rentals.urls")),
    path("settlement/", include("ledger.settlement_urls")),
    path("", include("reputation.urls")),
    path("contributions/", include("contributions.urls")),
]

urlpatterns = [
    path("", include("marketplace.urls")),
    path("", include("reputation.page_urls")),
    path("accounts/", include("allauth.urls")),
    path("contributions/", include("contributions.page_urls")),
    path("operator/", include("pricing.operator_urls")),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
]

handler404 = "janction.api.page_not_found"
handler500 = "janction.api.server_error"
