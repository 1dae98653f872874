"""The notifications pages: the list, one notification (marks it read), the bell's count (htmx), preferences."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from marketplace.notifications.models import Notification, NotificationKind
from marketplace.notifications.selectors import unread_count
from marketplace.notifications.services import notifications_mark_read, preferences_get, preferences_set

PAGE_SIZE = 30


class PreferencesForm(forms.Form):
    """Which kinds a user wants on the site and by e-mail."""

    site_kinds = forms.MultipleChoiceField(
        choices=NotificationKind.choices, required=False, widget=forms.CheckboxSelectMultiple, label="On the site"
    )
    email_kinds = forms.MultipleChoiceField(
        choices=NotificationKind.choices, required=False, widget=forms.CheckboxSelectMultiple, label="By e-mail"
    )


def preferences_form(user, data=None) -> PreferencesForm:
    """Return the preferences form, bound to `data` or filled with the user's current choice."""
    if data is not None:
        return PreferencesForm(data, prefix="notify")
    site, email = preferences_get(user_id=user.pk)
    return PreferencesForm(prefix="notify", initial={"site_kinds": sorted(site), "email_kinds": sorted(email)})


@login_required
@require_GET
def notifications_page(request):
    """The user's notifications, newest first, thirty a page."""
    notifications = Notification.objects.filter(user=request.user, on_site=True)
    page = Paginator(notifications, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "marketplace/notifications.html", {"page": page, "unread": unread_count(request.user)})


@login_required
@require_GET
def notification_page(request, notification_id: int):
    """One of the user's notifications (another user's is a 404); opening it marks it read."""
    notification = get_object_or_404(Notification, pk=notification_id, user=request.user, on_site=True)
    if notification.read_at is None:
        notifications_mark_read(user=request.user, notification_ids=[notification.pk])
    return render(request, "marketplace/notification.html", {"notification": notification})


@login_required
@require_POST
def notifications_read_all(request):
    """Mark every notification of the user read."""
    count = notifications_mark_read(user=request.user)
    messages.success(request, f"{count} notification{'s' if count != 1 else ''} marked read.")
    return redirect("notifications-page")


@login_required
@require_GET
def notifications_bell(request):
    """The layout's bell with the unread count (htmx polls it)."""
    return render(request, "marketplace/_bell.html", {"notifications_unread": unread_count(request.user)})


@login_required
@require_http_methods(["POST"])
def notification_preferences_save(request):
    """Save which kinds the user wants by which channel (the form lives on the profile page)."""
    form = preferences_form(request.user, request.POST)
    if not form.is_valid():
        messages.error(request, "Choose only the listed kinds of notification.")
        return redirect("profile-page")
    preferences_set(
        user=request.user, site_kinds=form.cleaned_data["site_kinds"], email_kinds=form.cleaned_data["email_kinds"]
    )
    messages.success(request, "Your notification choices are saved.")
    return redirect("profile-page")
