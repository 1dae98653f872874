"""The provider page's availability form (colocation): parse the form, call the nodes service, redirect."""

import re

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from janction.errors import ApplicationError
from nodes.availability import node_availability_set

WINDOW_LINE = re.compile(r"^\s*(?P<day>[A-Za-z]+|\d)\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")
DAY_NAMES = {name[:3]: name for name in ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")}
MAX_FORM_LINES = 70


def _windows(text: str) -> list[dict]:
    """Return the windows of lines like "mon 23:00-24:00"; a line that does not parse is refused by number."""
    windows = []
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) > MAX_FORM_LINES:
        raise ApplicationError(f"At most {MAX_FORM_LINES} windows are allowed.")
    for number, line in enumerate(lines, start=1):
        match = WINDOW_LINE.match(line)
        if match is None:
            raise ApplicationError(f"Window line {number} is not like 'mon 23:00-24:00'.")
        day = match["day"].lower()
        day = int(day) if day.isdigit() else DAY_NAMES.get(day[:3], day)
        start, end = (f"{int(t.split(':')[0]):02d}:{t.split(':')[1]}" for t in (match["start"], match["end"]))
        windows.append({"day": day, "start": start, "end": end})
    return windows


def _number(text: str, name: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 6:
        raise ApplicationError(f"{name} is a whole number.")
    return int(text)


@login_required
@require_POST
def node_availability_page(request, node_id: int):
    """Set a node's availability policy from the provider page."""
    post = request.POST
    try:
        node_availability_set(
            owner=request.user,
            node_id=node_id,
            mode=post.get("mode", ""),
            time_zone=post.get("time_zone", "").strip() or "UTC",
            windows=_windows(post.get("windows", "")) if post.get("mode") == "schedule" else [],
            utilization_threshold_percent=_number(post.get("utilization_threshold_percent", ""), "Utilisation"),
            memory_threshold_percent=_number(post.get("memory_threshold_percent", ""), "Memory"),
            grace_seconds=_number(post.get("grace_seconds", ""), "Grace period"),
        )
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Availability saved; the agent hears it at once when connected.")
    return redirect(f"/nodes/#node-{node_id}")
