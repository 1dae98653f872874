"""Account, wallet and API-key errors."""

from janction.errors import Conflict, NotFound, ValidationFailed


class WalletVerificationFailed(ValidationFailed):
    code = "wallet_verification_failed"


class NonceInvalid(ValidationFailed):
    code = "siwe_nonce_invalid"


class WalletTaken(Conflict):
    code = "wallet_already_linked"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class ApiKeyNameTaken(Conflict):
    code = "api_key_name_taken"


class WalletNotFound(NotFound):
    code = "wallet_not_found"
