"""The one exception hierarchy. Each error carries a stable code and an HTTP status.

The API maps these to a JSON body once, the HTMX views to a partial, the CLI to
an exit status; the codes are the same everywhere (ARCHITECTURE.md).
"""

from typing import Any


class ModelyardError(Exception):
    code = "ERR_INTERNAL"
    status = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def as_dict(self) -> dict[str, Any]:
        return error_body(self.code, self.message, self.details)


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the one error shape: `details` is always there, empty when there are none."""
    return {"code": code, "message": message, "details": details or {}}


class InternalError(ModelyardError):
    """Something crashed: clients get a reference to the log line, not the exception."""

    code = "ERR_INTERNAL"
    status = 500


class InvalidInput(ModelyardError):
    code = "ERR_INVALID"
    status = 422


class NotAuthenticated(ModelyardError):
    code = "ERR_UNAUTHENTICATED"
    status = 401


class PermissionDenied(ModelyardError):
    code = "ERR_FORBIDDEN"
    status = 403


class NotFound(ModelyardError):
    code = "ERR_NOT_FOUND"
    status = 404


class MethodNotAllowed(ModelyardError):
    """The route exists, the HTTP method does not (the Allow header lists those that do)."""

    code = "ERR_METHOD_NOT_ALLOWED"
    status = 405


class AlreadyExists(ModelyardError):
    """A name that must be unique is taken."""

    code = "ERR_ALREADY_EXISTS"
    status = 409


class AlreadyRunning(ModelyardError):
    code = "ERR_ALREADY_RUNNING"
    status = 409


class InUse(ModelyardError):
    code = "ERR_IN_USE"
    status = 409


class ConfirmRequired(ModelyardError):
    code = "ERR_CONFIRM_REQUIRED"
    status = 409


class NotInstalled(ModelyardError):
    code = "ERR_NOT_INSTALLED"
    status = 409


class Incompatible(ModelyardError):
    code = "ERR_INCOMPATIBLE"
    status = 409


class DiskSpace(ModelyardError):
    code = "ERR_DISK_SPACE"
    status = 507


class NetworkError(ModelyardError):
    code = "ERR_NETWORK"
    status = 502


class TimedOut(ModelyardError):
    code = "ERR_TIMEOUT"
    status = 504


class UpstreamError(ModelyardError):
    code = "ERR_UPSTREAM"
    status = 502


class AuthError(ModelyardError):
    """The hub refused us: a gated repo or a bad token."""

    code = "ERR_AUTH"
    status = 502


class ChecksumError(ModelyardError):
    code = "ERR_CHECKSUM"
    status = 502


class FormatError(ModelyardError):
    """A file or an entry is not of the format the request needs (a safetensors entry for the
    GGUF runtime, a file llama.cpp refuses): a conflict with what the resource is (409), not
    a malformed request."""

    code = "ERR_FORMAT"
    status = 409


class InsufficientRam(ModelyardError):
    code = "ERR_INSUFFICIENT_RAM"
    status = 409


class RegistryError(ModelyardError):
    """A registry file is invalid; the message names the file, the entry and the field."""

    code = "ERR_REGISTRY"
    status = 422

    def __init__(self, message: str, *, file: str = "", entry: str = "", field: str = ""):
        super().__init__(message, details={"file": file, "entry": entry, "field": field})
        self.file, self.entry, self.field = file, entry, field


class Cancelled(ModelyardError):
    code = "ERR_CANCELLED"
    status = 409


class InvalidState(ModelyardError):
    """The operation is not in a state that allows the request (retry a success, ...)."""

    code = "ERR_INVALID_STATE"
    status = 409


class Unavailable(ModelyardError):
    """What the request needs is not running (no runtime supervisor on any host)."""

    code = "ERR_UNAVAILABLE"
    status = 503


def _subclasses(cls: type) -> list[type]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _subclasses(sub))]


# The statuses an error can answer with; the API documents only these with the error body.
ERROR_STATUSES = frozenset(cls.status for cls in _subclasses(ModelyardError))


def error_of_code(code: str, message: str, details=None) -> ModelyardError:
    """Return the error of a stable code (one recorded on a row), ERR_INTERNAL if unknown."""
    for cls in _subclasses(ModelyardError):
        if cls.code == code and cls is not RegistryError:  # it takes file/entry/field
            return cls(message, details=details)
    return InternalError(message, details=details)
