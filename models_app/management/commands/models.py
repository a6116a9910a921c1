from models_app.management.base import ModelyardCommand
from models_app.management.models_cli import custom, files, maintenance


class Command(ModelyardCommand):
    help = (
        "Manage models, here, as operations: add-custom REPO (a Hub repo as custom entries), "
        "import PATH (a local GGUF file or model folder), export KEY DEST, verify KEY (every "
        "file hashed again, the GGUF header, the memory fit, --load: the vocabulary), repair "
        "KEY (fetch the damaged files again), update-check [KEY] (ask the Hub), update KEY "
        "(fetch the changed files). `manage.py models SUBCOMMAND --help` tells more."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        self.handlers = {}  # the subcommand's name → its handler
        for module in (custom, files, maintenance):
            self.handlers |= module.add_parsers(sub)

    def handle(self, *args, action, **options):
        return self.handlers[action](self, action=action, **options)
