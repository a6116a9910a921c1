"""Settings > Models: the HTMX page, its fragments and its actions."""

from django.urls import path, register_converter

from . import views, views_custom, views_files, views_runtime, views_verify
from .constants import MODEL_KEY_RE


class ModelKeyConverter:
    """Match a registry key only: anything else is a plain 404 before a query runs."""

    regex = MODEL_KEY_RE.removeprefix("^").removesuffix("$")

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(ModelKeyConverter, "modelkey")

app_name = "models"

urlpatterns = [
    path("", views.models_page, name="page"),
    path("header/", views.models_header, name="header"),
    path("runtime/", views_runtime.models_runtime, name="runtime"),
    path("import/", views_files.model_import, name="import"),
    path("custom/", views_custom.custom_dialog, name="custom"),
    path("custom/inspect/", views_custom.custom_inspect, name="custom_inspect"),
    path("custom/add/", views_custom.custom_add, name="custom_add"),
    path("<modelkey:key>/remove/", views_custom.custom_remove, name="custom_remove"),
    path("<modelkey:key>/card/", views.model_card, name="card"),
    path("<modelkey:key>/download/", views.model_download, name="download"),
    path("<modelkey:key>/activate/", views.model_activate, name="activate"),
    path("<modelkey:key>/delete/", views.model_delete, name="delete"),
    path("<modelkey:key>/load/", views_runtime.model_load, name="load"),
    path("<modelkey:key>/unload/", views_runtime.model_unload, name="unload"),
    path("<modelkey:key>/try/", views_runtime.model_try, name="try"),
    path("<modelkey:key>/export/", views_files.model_export, name="export"),
    path("<modelkey:key>/verify/", views_verify.model_verify, name="verify"),
    path("<modelkey:key>/repair/", views_verify.model_repair, name="repair"),
    path("<modelkey:key>/update/", views_verify.model_update, name="update"),
    path("<modelkey:key>/update-check/", views_verify.model_update_check, name="update_check"),
    path("operations/<int:operation_id>/cancel/", views.operation_cancel, name="cancel"),
    path("operations/<int:operation_id>/retry/", views.operation_retry, name="retry"),
]
