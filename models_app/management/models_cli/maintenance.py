"""`models verify|repair|update-check|update`: keep installed models whole and current."""

import sys

from models_app import selectors, services
from models_app.engine import operation_run_here
from models_app.errors import ModelyardError, NotInstalled
from models_app.models import Installation, OperationKind, OperationState

KINDS = {"verify": OperationKind.VERIFY, "repair": OperationKind.REPAIR}


def add_parsers(sub):
    """Add verify, repair, update-check and update; return their handlers."""
    verify = sub.add_parser("verify", help="Hash every file again and check the model.")
    verify.add_argument("key")
    verify.add_argument("--load", action="store_true", help="Test-load the vocabulary too.")
    repair = sub.add_parser("repair", help="Fetch again the files verify found damaged.")
    repair.add_argument("key")
    check = sub.add_parser("update-check", help="Ask the Hub for updates (all installed).")
    check.add_argument("key", nargs="?")
    update = sub.add_parser("update", help="Fetch the changed files, switch the snapshot.")
    update.add_argument("key")
    return {"verify": run, "repair": run, "update": run, "update-check": update_check}


def run(command, *, action, key, load=False, **options):
    """Run a verify, repair or update here and print what it found."""
    model = selectors.model_get(key=key)
    if not Installation.objects.filter(model=model).exists():
        raise NotInstalled(f"{model.key} is not installed.", details={"model": model.key})
    kind = KINDS.get(action, OperationKind.UPDATE)
    if action == "verify":
        command.stdout.write(f"Verifying model '{model.key}'...")
    op = operation_run_here(kind=kind, model=model, plan={"load": load} if load else None)
    for check in op.result.get("checks", []):
        mark = "✓" if check["passed"] else "✗"
        command.stdout.write(f"  {mark} {check['name']}: {check['message']}")
    if action == "repair" and op.result.get("repaired"):
        command.stdout.write(f"Repaired: {', '.join(op.result['repaired'])}.")
    if action == "update" and op.state == OperationState.SUCCEEDED:
        changed = ", ".join(c["path"] for c in op.result.get("changed", [])) or "nothing"
        command.stdout.write(f"Updated to {op.result.get('commit', '')[:12]}: {changed}.")
    command.stdout.write(f"{op.get_kind_display()} #{op.pk} {op.state}.")
    if op.state != OperationState.SUCCEEDED:
        command.stderr.write(f"{op.error_code}: {op.error_message}")
        sys.exit(2)


def update_check(command, *, key=None, **options):
    """Ask the Hub about one model, or every installed one without a key."""
    if key is None:
        models = selectors.model_queryset().filter(installation__isnull=False).order_by("key")
    else:
        models = [selectors.model_get(key=key)]
    failed = False
    for model in models:
        try:
            found = services.update_check(model=model)
        except ModelyardError as exc:  # one model's Hub error must not hide the others'
            command.stderr.write(f"  ! {model.key}: {exc.code}: {exc.message}")
            failed = True
            continue
        word = "update available" if found.available else "no update"
        command.stdout.write(f"  {model.key}: {word} ({found.reason})")
    if failed:
        sys.exit(2)
