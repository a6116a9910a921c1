import sys

from django.template.defaultfilters import filesizeformat

from models_app.engine import operation_run_here
from models_app.management.base import ModelyardCommand
from models_app.models import ModelType, OperationKind, OperationState
from models_app.services.imports import import_prepare
from models_app.store.local import IMPORT_MODES


class Command(ModelyardCommand):
    help = (
        "Import a GGUF file or a model folder (config.json and weights) under IMPORT_ROOTS "
        "into the models store as a local entry (repo local/<key>). Runs here, as an import "
        "operation."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="A file or folder under IMPORT_ROOTS.")
        parser.add_argument("--type", required=True, choices=ModelType.values)
        parser.add_argument("--name", help="Display name (default: the file or folder name).")
        parser.add_argument("--key", help="Registry key (default: from the name).")
        parser.add_argument("--mode", default="copy", choices=IMPORT_MODES)

    def handle(self, *args, path, type, name, key, mode, **options):
        name = name or path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gguf")
        model, plan = import_prepare(path=path, type=type, name=name, key=key, mode=mode)
        op = operation_run_here(kind=OperationKind.IMPORT, model=model, plan=plan)
        if op.state != OperationState.SUCCEEDED:
            self.stderr.write(f"{op.error_code}: {op.error_message}")
            sys.exit(2)
        self.stdout.write(
            f"Import #{op.pk} {op.state}: {model.key} ({op.result['files']} files, "
            f"{filesizeformat(op.result['bytes_total'])}, {mode}) at commit {op.commit_hash}."
        )
