"""API tokens: created once, stored hashed."""

from __future__ import annotations

from django.utils import timezone

from ..models import ApiToken, token_digest


def api_token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """Create a token for a user; return the row and the raw token, shown only once."""
    raw = ApiToken.new_raw()
    token = ApiToken.objects.create(user=user, name=name, digest=token_digest(raw), hint=raw[:12])
    return token, raw


def api_token_set_revoked(*, token: ApiToken, revoked: bool, user=None) -> ApiToken:
    """Revoke a token (or restore it); nothing else about a token changes after creation."""
    ApiToken.objects.filter(pk=token.pk).update(revoked=revoked)
    token.revoked = revoked
    return token


def api_token_authenticate(*, raw: str):
    """Return the user a raw token belongs to, or None."""
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=token_digest(raw), revoked=False, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    now = timezone.now()
    # Write last use at most once a minute so that a busy client does not write per request.
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user
