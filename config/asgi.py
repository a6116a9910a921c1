import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# This process serves requests: on PostgreSQL its connections come from a pool
# (config/settings.py reads the flag). Only when the settings are read here, at the
# start of a web process: a test that imports this module has its settings already.
# The flag goes once read, so that no process started from this one inherits it (a
# qcluster with a pool would fork it into its workers).
flag_web_process = not settings.configured and "MODELYARD_WEB_PROCESS" not in os.environ
if flag_web_process:
    os.environ["MODELYARD_WEB_PROCESS"] = "1"

django_asgi_app = get_asgi_application()
if flag_web_process:
    del os.environ["MODELYARD_WEB_PROCESS"]

# These need the app registry, which get_asgi_application() has loaded.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from models_app.openai_asgi import openai_fast_path  # noqa: E402
from models_app.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # A /v1 request with an API token skips Django's stack (models_app/openai_asgi.py).
        "http": openai_fast_path(django_asgi_app),
        # The origin must be one of ALLOWED_HOSTS; the session cookie names the user.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
