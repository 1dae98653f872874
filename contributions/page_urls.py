from django.urls import path

from contributions import views

urlpatterns = [
    path("", views.contributions_page, name="contributions-page"),
    path("pair/", views.pair_page, name="contributions-pair-page"),
    path("records/<int:record_id>/delete/", views.record_delete_view, name="contributions-record-delete"),
    path("devices/<int:device_id>/revoke/", views.device_revoke_view, name="contributions-device-revoke-page"),
]
