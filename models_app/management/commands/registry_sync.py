from models_app.management.base import ModelyardCommand
from models_app.services import registry_sync


class Command(ModelyardCommand):
    help = "Validate the registry YAML files and upsert their entries into the database."

    def handle(self, *args, **options):
        result = registry_sync()
        self.stdout.write(f"Registry synced: {result.summary()}.")
        for key in result.retired:
            self.stdout.write(f"  {key}: left the registry, kept (installed or in use)")
