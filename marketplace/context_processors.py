"""Template context shared by every page."""

from django.conf import settings


def janction(request):
    return {"JANCTION_EMBEDDED": settings.JANCTION_EMBEDDED}
