"""Every error reply under /api/ is the API's JSON error shape.

The API's exception handlers (config/api.py) shape the errors of an operation. What is
answered outside one comes from Django or ninja as HTML or plain text: the 404 of a route
that does not exist (a key with a slash is one), the 405 of a method a route does not
take, the 400 of a bad Host header, the 500 of a crash. This middleware replaces those
bodies with the same shape, keeping the status and the headers that matter (Allow).
"""

import json

from django.http import HttpResponse

from models_app.errors import error_body

API_PREFIX = "/api/"

_ANSWERS = {
    400: ("ERR_INVALID", "The request is not valid."),
    403: ("ERR_FORBIDDEN", "Forbidden."),
    404: ("ERR_NOT_FOUND", "No such API route: see /api/v1/docs."),
    405: ("ERR_METHOD_NOT_ALLOWED", "This route does not take {method}; it takes {allow}."),
    500: ("ERR_INTERNAL", "The server failed; the error is in its log."),
}


class ApiErrorMiddleware:
    """Give a non-JSON error reply under /api/ the JSON error shape."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code < 400
            or not (request.path + "/").startswith(API_PREFIX)
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        return _json_error(request, response)


def _json_error(request, response: HttpResponse) -> HttpResponse:
    status = response.status_code
    code, message = _ANSWERS.get(status, _ANSWERS[500 if status >= 500 else 400])
    details = {}
    if status == 404:
        details = {"path": request.path}
    elif status == 405:
        allow = sorted(m.strip() for m in response.get("Allow", "").split(",") if m.strip())
        message = message.format(method=request.method, allow=", ".join(allow) or "nothing")
        details = {"method": request.method, "allowed": allow}
    replaced = HttpResponse(
        json.dumps(error_body(code, message, details)),
        status=status,
        content_type="application/json",
    )
    if "Allow" in response:
        replaced["Allow"] = response["Allow"]
    return replaced
