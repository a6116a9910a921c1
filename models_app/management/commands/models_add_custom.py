from models_app.constants import MODEL_TYPES
from models_app.management.base import ModelyardCommand
from models_app.registry import POOLING_MODES
from models_app.services.custom_models import custom_model_add, custom_repo_inspect


class Command(ModelyardCommand):
    help = (
        "Add a Hub repo as custom entries, checked against the Hub (one entry per --file "
        "of a GGUF repo). Without --type, list what the repo offers."
    )

    def add_arguments(self, parser):
        parser.add_argument("repo_id", help="owner/name on the Hub")
        parser.add_argument("--type", choices=MODEL_TYPES)
        parser.add_argument("--revision", default="main")
        parser.add_argument("--file", action="append", default=[], dest="files")
        parser.add_argument("--name")
        parser.add_argument("--dimension", type=int)
        parser.add_argument("--pooling", choices=POOLING_MODES)
        parser.add_argument("--query-prefix")
        parser.add_argument("--document-prefix")
        parser.add_argument("--instruction")

    def handle(self, *args, **options):
        if not options["type"]:
            found = custom_repo_inspect(repo_id=options["repo_id"], revision=options["revision"])
            self.stdout.write(
                f"{found.repo_id} at {found.commit_hash[:10]}, pipeline tag "
                f"{found.pipeline_tag or 'none'}; fits: {', '.join(found.types) or 'nothing'}"
            )
            for f in found.gguf_files:
                self.stdout.write(f"  {f.path}  {f.quantization or '?'}  {f.size or 0:,} bytes")
            return
        models = custom_model_add(
            repo_id=options["repo_id"],
            type=options["type"],
            revision=options["revision"],
            files=options["files"],
            name=options["name"],
            dimension=options["dimension"],
            pooling=options["pooling"],
            query_prefix=options["query_prefix"],
            document_prefix=options["document_prefix"],
            instruction=options["instruction"],
        )
        for model in models:
            self.stdout.write(f"Added {model.key} ({model.name}): not installed.")
