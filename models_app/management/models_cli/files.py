"""`models import PATH` and `models export KEY DEST`: local files in and out, here."""

import sys

from django.template.defaultfilters import filesizeformat

from models_app import selectors
from models_app.engine import operation_run_here
from models_app.models import ModelType, OperationKind, OperationState
from models_app.services.exports import export_plan
from models_app.services.imports import import_prepare
from models_app.store.local import EXPORT_MODES, IMPORT_MODES


def add_parsers(sub):
    """Add import and export; return their handlers."""
    imp = sub.add_parser(
        "import",
        help="Import a GGUF file or a model folder (config.json and weights) under "
        "IMPORT_ROOTS as a local entry (repo local/<key>), here, as an import operation.",
    )
    imp.add_argument("path", help="A file or folder under IMPORT_ROOTS.")
    imp.add_argument("--type", required=True, choices=ModelType.values)
    imp.add_argument("--name", help="Display name (default: the file or folder name).")
    imp.add_argument("--key", help="Registry key (default: from the name).")
    imp.add_argument("--mode", default="copy", choices=IMPORT_MODES)
    exp = sub.add_parser(
        "export",
        help="Export an installed model's files and a manifest.json (repo, commit, sha256 "
        "per file) into a new directory under EXPORT_ROOTS (never overwrites), here, as an "
        "export operation.",
    )
    exp.add_argument("key", help="The model's registry key.")
    exp.add_argument("dest", help="A new directory under EXPORT_ROOTS.")
    exp.add_argument("--mode", default="copy", choices=EXPORT_MODES)
    return {"import": model_import, "export": model_export}


def model_import(command, *, path, type, name, key, mode, **options):
    """Import the file or folder here and print the entry it made."""
    name = name or path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".gguf")
    model, plan = import_prepare(path=path, type=type, name=name, key=key, mode=mode)
    op = operation_run_here(kind=OperationKind.IMPORT, model=model, plan=plan)
    if op.state != OperationState.SUCCEEDED:
        command.stderr.write(f"{op.error_code}: {op.error_message}")
        sys.exit(2)
    command.stdout.write(
        f"Import #{op.pk} {op.state}: {model.key} ({op.result['files']} files, "
        f"{filesizeformat(op.result['bytes_total'])}, {mode}) at commit {op.commit_hash}."
    )


def model_export(command, *, key, dest, mode, **options):
    """Export the model here and print where it went."""
    model = selectors.model_get(key=key)
    plan = export_plan(model=model, dest=dest, mode=mode)
    op = operation_run_here(kind=OperationKind.EXPORT, model=model, plan=plan)
    if op.state != OperationState.SUCCEEDED:
        command.stderr.write(f"{op.error_code}: {op.error_message}")
        sys.exit(2)
    command.stdout.write(
        f"Export #{op.pk} {op.state}: {model.key} → {op.result['dest']} "
        f"({op.result['files']} files, {filesizeformat(op.result['bytes_total'])}, {mode})."
    )
