from models_app.engine import operation_run
from models_app.management.base import ModelyardCommand
from models_app.services.runtime.supervisor import RuntimeSupervisor


class Command(ModelyardCommand):
    help = (
        "Run this host's runtime supervisor: it loads and unloads GGUF models in runner "
        "processes (llama-cpp-python's server, one per model) and keeps them alive. "
        "`manage.py run` starts it; Ctrl-C or SIGTERM stops it and its runners."
    )

    def handle(self, *args, **options):
        supervisor = RuntimeSupervisor(
            run_operation=lambda op_id: operation_run(operation_id=op_id)
        )
        self.stdout.write(f"Modelyard runtime on {supervisor.host} (Ctrl-C stops it)")
        self.stdout.flush()
        supervisor.run()
