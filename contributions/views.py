"""Contributor pages: records and their review state, paired devices, and the pairing approval."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from contributions import signing
from contributions.selectors import devices_for_user, records_for_user
from contributions.services import device_pair, device_revoke, record_delete
from janction.errors import ApplicationError


@login_required
def contributions_page(request):
    return render(
        request,
        "contributions/contributions.html",
        {
            "records": records_for_user(user=request.user)[:200],
            "devices": devices_for_user(user=request.user),
            "terms_version": settings.CONTRIBUTIONS_TERMS_VERSION,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def pair_page(request):
    """Show the extension's key fingerprint and pair it only when the signed-in user approves (POST)."""
    source = request.POST if request.method == "POST" else request.GET
    public_key = source.get("public_key", "")
    algorithm = source.get("algorithm", "")
    name = source.get("name", "")[:80] or "Browser extension"
    try:
        fingerprint = signing.fingerprint(signing.b64decode(public_key))
    except ValueError:
        fingerprint = None
    if request.method == "POST" and fingerprint:
        try:
            device = device_pair(user=request.user, algorithm=algorithm, public_key=public_key, name=name)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Paired {device.name} ({device.fingerprint}). You can close this tab.")
            return redirect("contributions-page")
    return render(
        request,
        "contributions/pair.html",
        {"public_key": public_key, "algorithm": algorithm, "name": name, "fingerprint": fingerprint},
    )


@login_required
@require_POST
def record_delete_view(request, record_id: int):
    try:
        record_delete(user=request.user, record_id=record_id)
        messages.success(request, "The record's content is deleted; its hash stays.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("contributions-page")


@login_required
@require_POST
def device_revoke_view(request, device_id: int):
    try:
        device_revoke(user=request.user, device_id=device_id)
        messages.success(request, "The device is revoked: it can no longer upload.")
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("contributions-page")
