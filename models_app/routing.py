"""Websocket routes (config/asgi.py mounts them behind the origin check and session auth)."""

from django.urls import path

from .consumers import LiveConsumer

websocket_urlpatterns = [
    path("ws/live/", LiveConsumer.as_asgi()),
]
