"""Errors of data contributions: each a stable code and an HTTP status (janction.errors)."""

from janction.errors import ApplicationError, Conflict, NotFound, PermissionDenied, ValidationFailed


class MalformedUpload(ValidationFailed):
    code = "malformed_upload"


class UnknownDevice(ApplicationError):
    code = "unknown_device"
    status = 401


class BadSignature(ApplicationError):
    code = "bad_signature"
    status = 401


class DeviceRevoked(PermissionDenied):
    code = "device_revoked"


class ReplayedCounter(Conflict):
    code = "replayed_counter"


class MalformedCosignature(ValidationFailed):
    code = "malformed_cosignature"


class BadCosignature(ApplicationError):
    code = "bad_cosignature"
    status = 401


class WalletNotLinked(PermissionDenied):
    code = "wallet_not_linked"


class ConsentOutdated(ValidationFailed):
    code = "consent_outdated"


class RecordTooLarge(ApplicationError):
    code = "record_too_large"
    status = 413


class PrivateDataLeft(ApplicationError):
    code = "private_data_left"
    status = 422


class UploadCapReached(ApplicationError):
    code = "upload_cap_reached"
    status = 429


class KeyAlreadyPaired(Conflict):
    code = "key_already_paired"


class InvalidKey(ValidationFailed):
    code = "invalid_key"


class RecordNotFound(NotFound):
    code = "record_not_found"


class DeviceNotFound(NotFound):
    code = "device_not_found"


class NotCommitted(NotFound):
    code = "not_committed"
