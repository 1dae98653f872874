"""Service errors: each with a stable code and the HTTP status the ingress or the API answers with."""

from janction.errors import ApplicationError, Conflict, NotFound, ValidationFailed


class ExposeInvalid(ValidationFailed):
    code = "expose_invalid"


class ServiceNotFound(NotFound):
    code = "service_not_found"


class ServiceTokenNotFound(NotFound):
    code = "service_token_not_found"


class ServiceTokenNameTaken(Conflict):
    code = "service_token_name_taken"


class ServiceUnauthorized(ApplicationError):
    code = "service_unauthorized"
    status = 401


class ServiceGone(ApplicationError):
    code = "service_gone"
    status = 410


class ServiceStarting(ApplicationError):
    code = "service_starting"
    status = 503


class ServiceKeyScoped(ApplicationError):
    code = "api_key_scoped_to_service"
    status = 403
