"""`GET /healthz`: for load balancers and orchestrators. No sign-in, and no details."""

from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import selectors


@never_cache
@require_safe
def healthz(request):
    """Answer 200 {"status": "ok"} when the database answers and a worker's heartbeat is
    fresh, else 503 {"status": "unavailable"}."""
    if selectors.health_ok():
        return JsonResponse({"status": "ok"})
    return JsonResponse({"status": "unavailable"}, status=503)
