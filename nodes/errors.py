"""Node errors."""

from janction.errors import ApplicationError, Conflict, NotFound


class NodeNotFound(NotFound):
    code = "node_not_found"


class NodeNameTaken(Conflict):
    code = "node_name_taken"


class InvalidNodeTransition(Conflict):
    code = "invalid_node_transition"


class NodeBusy(Conflict):
    code = "node_busy"


class EnrollmentRefused(ApplicationError):
    code = "enrollment_refused"
    status = 403
