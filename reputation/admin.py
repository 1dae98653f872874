"""Operators see every subject's evidence, scores and alerts; evidence is append-only even here."""

from django.contrib import admin

from reputation.models import AccountLink, Alert, Evidence, ScoreFold, SubjectScore


class ReadOnly(admin.ModelAdmin):
    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False


@admin.register(Evidence)
class EvidenceAdmin(ReadOnly):
    list_display = ["pk", "day", "kind", "subject_kind", "node", "user", "positive", "negative", "self_dealing"]
    list_filter = ["kind", "subject_kind", "self_dealing", "day"]
    search_fields = ["source_key", "detail"]


@admin.register(SubjectScore)
class SubjectScoreAdmin(ReadOnly):
    list_display = ["subject_kind", "subject_id", "alpha", "beta", "through_day"]
    list_filter = ["subject_kind"]


@admin.register(ScoreFold)
class ScoreFoldAdmin(ReadOnly):
    list_display = ["day", "evidence_rows", "subjects", "folded_at"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["created_at", "message", "acknowledged_at"]
    readonly_fields = ["evidence", "message", "created_at"]
    list_filter = ["acknowledged_at"]


@admin.register(AccountLink)
class AccountLinkAdmin(admin.ModelAdmin):
    list_display = ["user", "other", "reason", "created_at"]
