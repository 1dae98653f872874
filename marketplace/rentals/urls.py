from django.urls import path

from marketplace.rentals import api, dispute_api
from marketplace.svc import api as svc_api

urlpatterns = [
    path("rentals/", api.RentalList.as_view(), name="rentals"),
    path("rentals/<int:rental_id>/", api.RentalDetail.as_view(), name="rental-detail"),
    path("rentals/<int:rental_id>/cancel/", api.RentalCancel.as_view(), name="rental-cancel"),
    path("rentals/<int:rental_id>/logs/", api.RentalLogs.as_view(), name="rental-logs"),
    path("rentals/<int:rental_id>/logs/download/", api.RentalLogsDownload.as_view(), name="rental-logs-download"),
    path("rentals/<int:rental_id>/dispute/", dispute_api.RentalDispute.as_view(), name="rental-dispute"),
    path("rentals/<int:rental_id>/service/", svc_api.ServiceDetail.as_view(), name="rental-service"),
    path("rentals/<int:rental_id>/service/tokens/", svc_api.ServiceTokenList.as_view(), name="rental-service-tokens"),
    path(
        "rentals/<int:rental_id>/service/tokens/<int:token_id>/",
        svc_api.ServiceTokenDetail.as_view(),
        name="rental-service-token",
    ),
    path("rentals/<int:rental_id>/service/keys/", svc_api.ServiceKeyList.as_view(), name="rental-service-keys"),
    path("earnings/held/", dispute_api.HeldEarnings.as_view(), name="earnings-held"),
]
