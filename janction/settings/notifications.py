"""Notifications: which events a user hears about by default, and when a rental's escrow counts as low."""

from .env import env_int

# Every kind a user may choose (marketplace.notifications.models.NotificationKind).
NOTIFICATIONS_KINDS = ("rental_started", "rental_ended", "rental_failed", "escrow_low", "node_offline")
# A user who never saved preferences sees every kind on the site and gets e-mail only for what needs action.
NOTIFICATIONS_DEFAULT_SITE = NOTIFICATIONS_KINDS
NOTIFICATIONS_DEFAULT_EMAIL = ("rental_failed", "escrow_low", "node_offline")
# A running rental's escrow is low when what it still holds is under this percentage of what it committed
# (held_total - refunded). Sent once per rental.
NOTIFICATIONS_ESCROW_LOW_PERCENT = env_int("NOTIFICATIONS_ESCROW_LOW_PERCENT", 10)
NOTIFICATIONS_ESCROW_SCAN_SECONDS = env_int("NOTIFICATIONS_ESCROW_SCAN_SECONDS", 60)
