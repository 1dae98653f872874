from django.urls import path

from nodes import api, availability_api

urlpatterns = [
    path("nodes/", api.NodeList.as_view(), name="nodes"),
    path("nodes/<int:node_id>/", api.NodeDetail.as_view(), name="node-detail"),
    path("nodes/<int:node_id>/drain/", api.NodeDrain.as_view(), name="node-drain"),
    path("nodes/<int:node_id>/undrain/", api.NodeUndrain.as_view(), name="node-undrain"),
    path("nodes/<int:node_id>/enrollment-token/", api.NodeEnrollmentToken.as_view(), name="node-enrollment-token"),
    path(
        "nodes/<int:node_id>/availability/",
        availability_api.NodeAvailabilityView.as_view(),
        name="node-availability",
    ),
]
