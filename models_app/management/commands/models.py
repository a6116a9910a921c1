import sys

from models_app import selectors, services
from models_app.engine import operation_run_here
from models_app.errors import ModelyardError, NotInstalled
from models_app.management.base import ModelyardCommand
from models_app.models import Installation, OperationKind, OperationState


class Command(ModelyardCommand):
    help = (
        "Keep installed models whole and current: verify (every file hashed again, the GGUF "
        "header, the memory fit, --load: the vocabulary), repair (fetch the damaged files "
        "again), update-check [KEY] (ask the Hub), update (fetch the changed files). Verify, "
        "repair and update run here, as operations."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        verify = sub.add_parser("verify", help="Hash every file again and check the model.")
        verify.add_argument("key")
        verify.add_argument("--load", action="store_true", help="Test-load the vocabulary too.")
        repair = sub.add_parser("repair", help="Fetch again the files verify found damaged.")
        repair.add_argument("key")
        check = sub.add_parser("update-check", help="Ask the Hub for updates (all installed).")
        check.add_argument("key", nargs="?")
        update = sub.add_parser("update", help="Fetch the changed files, switch the snapshot.")
        update.add_argument("key")

    def handle(self, *args, action, key=None, load=False, **options):
        if action == "update-check":
            return self._update_check(key)
        model = selectors.model_get(key=key)
        if not Installation.objects.filter(model=model).exists():
            raise NotInstalled(f"{model.key} is not installed.", details={"model": model.key})
        kind = {"verify": OperationKind.VERIFY, "repair": OperationKind.REPAIR}.get(
            action, OperationKind.UPDATE
        )
        if action == "verify":
            self.stdout.write(f"Verifying model '{model.key}'...")
        op = operation_run_here(kind=kind, model=model, plan={"load": load} if load else None)
        for check in op.result.get("checks", []):
            mark = "✓" if check["passed"] else "✗"
            self.stdout.write(f"  {mark} {check['name']}: {check['message']}")
        if action == "repair" and op.result.get("repaired"):
            self.stdout.write(f"Repaired: {', '.join(op.result['repaired'])}.")
        if action == "update" and op.state == OperationState.SUCCEEDED:
            changed = ", ".join(c["path"] for c in op.result.get("changed", [])) or "nothing"
            self.stdout.write(f"Updated to {op.result.get('commit', '')[:12]}: {changed}.")
        self.stdout.write(f"{op.get_kind_display()} #{op.pk} {op.state}.")
        if op.state != OperationState.SUCCEEDED:
            self.stderr.write(f"{op.error_code}: {op.error_message}")
            sys.exit(2)
        return None

    def _update_check(self, key):
        if key is None:
            models = selectors.model_queryset().filter(installation__isnull=False).order_by("key")
        else:
            models = [selectors.model_get(key=key)]
        failed = False
        for model in models:
            try:
                found = services.update_check(model=model)
            except ModelyardError as exc:  # one model's Hub error must not hide the others'
                self.stderr.write(f"  ! {model.key}: {exc.code}: {exc.message}")
                failed = True
                continue
            word = "update available" if found.available else "no update"
            self.stdout.write(f"  {model.key}: {word} ({found.reason})")
        if failed:
            sys.exit(2)
