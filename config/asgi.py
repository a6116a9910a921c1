import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# This process serves requests: on PostgreSQL its connections come from a pool
# (config/settings.py). Set before the settings are read; a test that imports this
# module has read them already and keeps its own connections.
os.environ.setdefault("MODELYARD_WEB_PROCESS", "1")

django_asgi_app = get_asgi_application()

# These need the app registry, which get_asgi_application() has loaded.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from models_app.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The origin must be one of ALLOWED_HOSTS; the session cookie names the user.
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)
