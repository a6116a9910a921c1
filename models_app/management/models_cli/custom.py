"""`models add-custom REPO`: add a Hub repo as custom entries, checked against the Hub."""

from models_app.constants import MODEL_TYPES
from models_app.registry import POOLING_MODES
from models_app.services.custom_models import custom_model_add, custom_repo_inspect


def add_parsers(sub):
    """Add add-custom; return its handler."""
    add = sub.add_parser(
        "add-custom",
        help="Add a Hub repo as custom entries, checked against the Hub (one entry per "
        "--file of a GGUF repo). Without --type, list what the repo offers.",
    )
    add.add_argument("repo_id", help="owner/name on the Hub")
    add.add_argument("--type", choices=MODEL_TYPES)
    add.add_argument("--revision", default="main")
    add.add_argument("--file", action="append", default=[], dest="files")
    add.add_argument("--name")
    add.add_argument("--dimension", type=int)
    add.add_argument("--pooling", choices=POOLING_MODES)
    add.add_argument("--query-prefix")
    add.add_argument("--document-prefix")
    add.add_argument("--instruction")
    return {"add-custom": add_custom}


def add_custom(command, **options):
    """List what the repo offers (no --type) or add its entries."""
    if not options["type"]:
        found = custom_repo_inspect(repo_id=options["repo_id"], revision=options["revision"])
        command.stdout.write(
            f"{found.repo_id} at {found.commit_hash[:10]}, pipeline tag "
            f"{found.pipeline_tag or 'none'}; fits: {', '.join(found.types) or 'nothing'}"
        )
        for f in found.gguf_files:
            command.stdout.write(f"  {f.path}  {f.quantization or '?'}  {f.size or 0:,} bytes")
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
        command.stdout.write(f"Added {model.key} ({model.name}): not installed.")
