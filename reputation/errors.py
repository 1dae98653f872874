"""Reputation errors."""

from janction.errors import NotFound, ValidationFailed


class SubjectNotFound(NotFound):
    code = "reputation_subject_not_found"


class EvidenceInvalid(ValidationFailed):
    code = "reputation_evidence_invalid"
