from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from config.api import api
from models_app import openai_api
from models_app.health import healthz

admin.site.site_header = "Modelyard"
admin.site.site_title = "Modelyard"
admin.site.index_title = "Models, downloads and collections"

urlpatterns = [
    # The front door leads to the Models page (which sends a stranger to the login first).
    path("", RedirectView.as_view(pattern_name="models:page"), name="home"),
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("settings/models/", include("models_app.urls")),
    # OpenAI-compatible: API tokens (or a superuser's session), served by the runtime.
    path("v1/models", openai_api.models, name="openai-models"),
    path("v1/chat/completions", openai_api.chat_completions, name="openai-chat"),
    path("v1/completions", openai_api.completions, name="openai-completions"),
    path("v1/embeddings", openai_api.embeddings, name="openai-embeddings"),
]
