"""Template context shared by every page."""

from django.conf import settings

from marketplace.notifications.selectors import unread_count


def janction(request):
    return {"JANCTION_EMBEDDED": settings.JANCTION_EMBEDDED}


def notifications(request):
    """The unread count the layout's bell shows (signed-in users only)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"notifications_unread": unread_count(user)}
