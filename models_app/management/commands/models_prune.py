import sys

from django.template.defaultfilters import filesizeformat

from models_app.engine import operation_run_here
from models_app.management.base import ModelyardCommand
from models_app.models import OperationKind, OperationState
from models_app.services import PrunePlan, prune_plan


class Command(ModelyardCommand):
    help = (
        "Remove least-recently-used models until the store is under MODELS_MAX_BYTES and "
        "MIN_FREE_BYTES are free; pinned, in-use and active models are never removed. "
        "Runs here, as a prune operation (each delete its own operation)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="List, remove nothing.")

    def handle(self, *args, dry_run, **options):
        plan = prune_plan()
        self._describe(plan, verb="would remove" if dry_run else "removes")
        if dry_run or not plan.has_work:
            return
        op = operation_run_here(kind=OperationKind.PRUNE, plan=plan.as_dict())
        removed, failed = op.result.get("removed", []), op.result.get("failed", [])
        self.stdout.write(
            f"Prune #{op.pk} {op.state}: removed {len(removed)} models, "
            f"{filesizeformat(op.result.get('bytes_freed', 0))} freed."
        )
        for failure in failed:
            self.stderr.write(f"  ! {failure}")
        if op.state != OperationState.SUCCEEDED:
            self.stderr.write(f"{op.error_code}: {op.error_message}")
            sys.exit(2)

    def _describe(self, plan: PrunePlan, *, verb: str) -> None:
        self.stdout.write(
            f"Store {filesizeformat(plan.total_bytes)}, free {filesizeformat(plan.free_bytes)}; "
            f"needs {filesizeformat(plan.need_bytes)} freed; prune {verb} "
            f"{len(plan.removals)} models ({filesizeformat(plan.bytes_to_free)})."
        )
        for item in plan.removals:
            self.stdout.write(f"  - {item.model} ({filesizeformat(item.bytes)}): {item.reason}")
        for item in plan.skipped:
            self.stdout.write(f"  = {item.model} kept: {item.reason}")
        for path in plan.partial_files:
            self.stdout.write(f"  - partial file {path}")
        if not plan.enough:
            self.stderr.write("Even so the store stays over its limits: pin fewer models.")
