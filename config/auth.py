"""API authentication: superusers only, by API token or by Django session.

Anonymous callers get 401; a signed-in user who is not a superuser gets 403.
"""

from django.conf import settings
from django.middleware.csrf import CsrfViewMiddleware
from ninja.security import APIKeyCookie, HttpBearer

from models_app.errors import NotAuthenticated, PermissionDenied
from models_app.services import api_token_authenticate


def _require_superuser(user):
    if not user.is_superuser:
        raise PermissionDenied("This API is for superusers only.")
    return user


class TokenAuth(HttpBearer):
    """Authorization: Bearer <token>, created in the admin or by `manage.py api_token`."""

    def authenticate(self, request, token):
        user = api_token_authenticate(raw=token)
        if user is None:
            raise NotAuthenticated("The API token is invalid or revoked.")
        return _require_superuser(user)


class SessionAuth(APIKeyCookie):
    """The Django session cookie, with Django's CSRF check on unsafe methods."""

    param_name = settings.SESSION_COOKIE_NAME

    def _get_key(self, request):
        # Decide who the caller is before CSRF, so that an anonymous POST is a 401.
        return request.COOKIES.get(self.param_name)

    def authenticate(self, request, key):
        user = request.user
        if not user.is_authenticated:
            return None
        _require_superuser(user)
        if request.method not in ("GET", "HEAD", "OPTIONS", "TRACE"):
            reason = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
            if reason is not None:
                raise PermissionDenied("CSRF check failed: send the X-CSRFToken header.")
        return user


api_auth = [TokenAuth(), SessionAuth()]
