"""The CLI's error mapping: a ModelyardError becomes one line on stderr and exit status 2."""

import sys

from django.core.management.base import BaseCommand

from models_app.errors import ModelyardError


class ModelyardCommand(BaseCommand):
    def execute(self, *args, **options):
        try:
            return super().execute(*args, **options)
        except ModelyardError as exc:
            self.stderr.write(f"{exc.code}: {exc.message}")
            sys.exit(2)
