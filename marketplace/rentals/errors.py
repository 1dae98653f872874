"""Rental errors: each with a stable code and an HTTP status."""

from janction.errors import ApplicationError, Conflict, NotFound, ValidationFailed


class RentalInvalid(ValidationFailed):
    code = "rental_invalid"


class RentalPoolUnknown(ValidationFailed):
    code = "unknown_pool"


class RentalFundsShort(ApplicationError):
    code = "insufficient_funds"
    status = 402


class RentalNotFound(NotFound):
    code = "rental_not_found"


class RentalAlreadyEnded(Conflict):
    code = "rental_already_ended"


class InvalidRentalTransition(Conflict):
    code = "invalid_rental_transition"
