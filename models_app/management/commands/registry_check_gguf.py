from models_app.management.base import ModelyardCommand
from models_app.services.gguf_remote import registry_gguf_check


class Command(ModelyardCommand):
    help = (
        "Read each curated GGUF entry's header on the Hub by Range requests (a few MB at "
        "most, no download) and report where the YAML's context_window, quantization or "
        "parameter_count disagree with it. Exit status 1 when any does or cannot be read."
    )

    def add_arguments(self, parser):
        parser.add_argument("keys", nargs="*", help="Only these registry keys.")

    def handle(self, *args, **options):
        checks = registry_gguf_check(keys=options["keys"] or None)
        for check in checks:
            if check.error:
                self.stdout.write(f"{check.key}: not read: {check.error}")
            elif check.differences:
                for difference in check.differences:
                    self.stdout.write(f"{check.key}: {difference}")
            else:
                self.stdout.write(f"{check.key}: agrees ({check.range_bytes:,} bytes read)")
        bad = [c for c in checks if not c.ok]
        self.stdout.write(f"{len(checks)} GGUF entries checked, {len(bad)} with a problem.")
        if bad:
            raise SystemExit(1)
