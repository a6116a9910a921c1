"""The ninja API object: /api/v1/, OpenAPI docs at /api/v1/docs.

Errors are mapped to JSON once, here: {"code": ..., "message": ..., "details": {...}}.
What is answered outside an operation (an unknown route, a wrong method) gets the same
shape from config.middleware.ApiErrorMiddleware.
"""

from django.http import Http404
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from collections_app.api import router as collections_router
from config.auth import api_auth
from models_app.api import router as models_router
from models_app.api_custom import router as custom_router
from models_app.api_files import router as files_router
from models_app.api_maintenance import router as maintenance_router
from models_app.api_runtime import router as runtime_router
from models_app.api_status import router as status_router
from models_app.errors import ModelyardError, error_body

api = NinjaAPI(
    title="Modelyard API",
    version="1",
    description=(
        "Superusers only: a session (with X-CSRFToken on writes) or `Authorization: Bearer"
        " <token>`. Every error is `{code, message, details}`; every string refuses control"
        " characters (a description allows tab and newline) and has a maximum length."
    ),
    urls_namespace="api-v1",
    auth=api_auth,
    docs_url="/docs",
)
# Before the models router: POST /models/import must not fall to /models/{key}.
api.add_router("/", files_router)
# Before the models router: /models/custom... would otherwise be taken for a model key.
api.add_router("/", custom_router)
api.add_router("/", models_router)
api.add_router("/", collections_router)
api.add_router("/", status_router)
api.add_router("/", runtime_router)
api.add_router("/", maintenance_router)


def _error(request, status: int, code: str, message: str, details=None):
    return api.create_response(request, error_body(code, message, details), status=status)


@api.exception_handler(ModelyardError)
def modelyard_error(request, exc: ModelyardError):
    return _error(request, exc.status, exc.code, exc.message, exc.details)


@api.exception_handler(AuthenticationError)
def authentication_error(request, exc):
    return _error(request, 401, "ERR_UNAUTHENTICATED", "Sign in as a superuser or send a token.")


@api.exception_handler(ValidationError)
def validation_error(request, exc: ValidationError):
    return _error(request, 422, "ERR_INVALID", "The request is not valid.", {"errors": exc.errors})


@api.exception_handler(Http404)
def not_found(request, exc):
    return _error(request, 404, "ERR_NOT_FOUND", str(exc) or "Not found.")


@api.exception_handler(HttpError)
def http_error(request, exc: HttpError):
    if exc.status_code == 400 and exc.__cause__ is not None:
        # ninja's answer to a body it cannot parse: the same 422 as any other bad input.
        error = {"loc": ["body"], "type": "json_invalid", "msg": f"Not JSON: {exc.__cause__}"}
        return _error(
            request, 422, "ERR_INVALID", "The body is not valid JSON.", {"errors": [error]}
        )
    codes = {401: "ERR_UNAUTHENTICATED", 403: "ERR_FORBIDDEN", 404: "ERR_NOT_FOUND"}
    return _error(request, exc.status_code, codes.get(exc.status_code, "ERR_INVALID"), str(exc))
