"""Account and API-key errors (wallet errors are the ledger's: ledger.errors)."""

from janction.errors import Conflict, NotFound


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"


class ApiKeyNameTaken(Conflict):
    code = "api_key_name_taken"


class UserSuspendRefused(Conflict):
    code = "user_suspend_refused"
