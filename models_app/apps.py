from django.apps import AppConfig
from django.core import checks


class ModelsAppConfig(AppConfig):
    name = "models_app"
    verbose_name = "Models"

    def ready(self):
        from django.core.signals import setting_changed
        from django_q.signals import post_spawn

        from . import signals
        from .checks import (
            check_disk_policy,
            check_file_roots,
            check_hf_endpoint,
            check_models_store,
            check_task_timeout,
        )
        from .store import store_settings_changed

        # A worker that starts beats its heartbeat from a thread, and marks the operations
        # of dead workers interrupted at once instead of waiting for the next schedule tick.
        post_spawn.connect(signals.worker_started, dispatch_uid="modelyard-worker")
        # The Store is built once from settings; a test that overrides them gets a new one.
        setting_changed.connect(store_settings_changed, dispatch_uid="modelyard-store")
        for check in (
            check_models_store,
            check_hf_endpoint,
            check_disk_policy,
            check_task_timeout,
            check_file_roots,
        ):
            checks.register(check, "modelyard")
