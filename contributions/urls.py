from django.urls import path

from contributions import api

urlpatterns = [
    path("", api.ContributionUpload.as_view(), name="contributions-upload"),
    path("records/", api.RecordList.as_view(), name="contributions-records"),
    path("records/<int:record_id>/", api.RecordDetail.as_view(), name="contributions-record"),
    path("records/<int:record_id>/commitment/", api.RecordCommitment.as_view(), name="contributions-commitment"),
    path("devices/", api.DeviceList.as_view(), name="contributions-devices"),
    path("devices/status/", api.DeviceStatus.as_view(), name="contributions-device-status"),
    path("devices/<int:device_id>/revoke/", api.DeviceRevoke.as_view(), name="contributions-device-revoke"),
]
