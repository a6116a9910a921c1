from django.template.defaultfilters import filesizeformat

from models_app.management.base import ModelyardCommand
from models_app.services import prune_run


class Command(ModelyardCommand):
    help = (
        "Remove least-recently-used models until the store is under MODELS_MAX_BYTES and "
        "MIN_FREE_BYTES are free; pinned, in-use and active models are never removed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="List, remove nothing.")

    def handle(self, *args, dry_run, **options):
        plan = prune_run(dry_run=dry_run)
        verb = "would remove" if dry_run else "removes"
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
        for failure in plan.failed:
            self.stderr.write(f"  ! {failure}")
