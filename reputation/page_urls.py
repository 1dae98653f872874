from django.urls import path

from reputation import views

urlpatterns = [
    path("reputation/", views.reputation_page, name="reputation-page"),
]
