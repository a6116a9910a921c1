from models_app.management.base import ModelyardCommand
from models_app.services import store_reconcile


class Command(ModelyardCommand):
    help = "Scan the models store and update installed state, unmanaged repos and cache figures."

    def handle(self, *args, **options):
        result = store_reconcile()
        self.stdout.write(f"Store reconciled: {result.summary()}.")
        for warning in result.warnings:
            self.stderr.write(f"  warning: {warning}")
