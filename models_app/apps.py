from django.apps import AppConfig


class ModelsAppConfig(AppConfig):
    name = "models_app"
    verbose_name = "Models"

    def ready(self):
        from django_q.signals import post_spawn

        from . import signals

        # A worker that starts marks the operations of dead workers interrupted at once,
        # instead of waiting for the next schedule tick.
        post_spawn.connect(signals.reap_at_worker_start, dispatch_uid="modelyard-reap")
