import sys

from django.template.defaultfilters import filesizeformat

from models_app import selectors
from models_app.engine import operation_run_here
from models_app.management.base import ModelyardCommand
from models_app.models import OperationKind, OperationState
from models_app.services.exports import export_plan
from models_app.store.local import EXPORT_MODES


class Command(ModelyardCommand):
    help = (
        "Export an installed model's files and a manifest.json (repo, commit, sha256 per file) "
        "into a new directory under EXPORT_ROOTS; never overwrites. Runs here, as an export "
        "operation."
    )

    def add_arguments(self, parser):
        parser.add_argument("key", help="The model's registry key.")
        parser.add_argument("dest", help="A new directory under EXPORT_ROOTS.")
        parser.add_argument("--mode", default="copy", choices=EXPORT_MODES)

    def handle(self, *args, key, dest, mode, **options):
        model = selectors.model_get(key=key)
        plan = export_plan(model=model, dest=dest, mode=mode)
        op = operation_run_here(kind=OperationKind.EXPORT, model=model, plan=plan)
        if op.state != OperationState.SUCCEEDED:
            self.stderr.write(f"{op.error_code}: {op.error_message}")
            sys.exit(2)
        self.stdout.write(
            f"Export #{op.pk} {op.state}: {model.key} → {op.result['dest']} "
            f"({op.result['files']} files, {filesizeformat(op.result['bytes_total'])}, {mode})."
        )
