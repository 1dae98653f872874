"""Pricing errors."""

from janction.errors import NotFound, ValidationFailed


class UnknownPool(NotFound):
    code = "unknown_pool"


class InvalidBid(ValidationFailed):
    code = "invalid_bid"
