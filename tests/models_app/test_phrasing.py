"""Messages built from a type or a kind: one article rule, and "the Hub" spelled one way."""

import ast
import re
from pathlib import Path

import pytest

from models_app.errors import AlreadyRunning, Incompatible
from models_app.models import ModelType, OperationKind
from models_app.phrasing import type_label, with_article
from tests.factories import InstallationFactory, ModelFactory, OperationFactory

ROOT = Path(__file__).resolve().parents[2]
MESSAGE_SOURCES = ["models_app", "collections_app", "config"]


@pytest.mark.parametrize(
    ("word", "phrase"),
    [
        ("embedding", "an embedding"),
        ("LLM", "an LLM"),
        ("reranker", "a reranker"),
        ("SPLADE", "a SPLADE"),
        ("download", "a download"),
        ("delete", "a delete"),
        ("prune", "a prune"),
        ("verify", "a verify"),
        ("update", "an update"),
        ("import", "an import"),
        ("export", "an export"),
        ("load", "a load"),
        ("HF", "an HF"),
        ("GGUF", "a GGUF"),
    ],
)
def test_with_article_follows_the_sound(word, phrase):
    assert with_article(word) == phrase


def test_every_type_and_kind_reads_right():
    labels = {t: with_article(type_label(t)) for t in ModelType.values}
    assert labels == {
        "embedding": "an embedding", "llm": "an LLM",
        "reranker": "a reranker", "splade": "a SPLADE",
    }  # fmt: skip
    kinds = {k: with_article(k) for k in OperationKind.values}
    assert kinds == {
        "download": "a download", "delete": "a delete", "prune": "a prune",
        "verify": "a verify", "repair": "a repair", "update": "an update",
        "import": "an import", "export": "an export", "load": "a load", "unload": "an unload",
    }  # fmt: skip


def test_type_label_quotes_an_unknown_value_back():
    assert type_label("vision") == "vision"


@pytest.mark.django_db
def test_activating_for_another_type_says_an_embedding_model():
    from models_app.services import model_activate

    model = ModelFactory(key="bge-small-en-v1.5", type="embedding")
    InstallationFactory(model=model)
    with pytest.raises(Incompatible) as info:
        model_activate(model=model, type="llm")
    assert info.value.message == (
        "bge-small-en-v1.5 is an embedding model and cannot be the active LLM model."
    )


@pytest.mark.django_db
def test_a_conflict_names_an_update_with_its_article():
    from models_app.services import download_start

    model = ModelFactory(key="tiny")
    update = OperationFactory(model=model, kind="update", state="running")
    with pytest.raises(AlreadyRunning) as info:
        download_start(model=model)
    assert info.value.message == (
        f"tiny already has an update operation #{update.id} (running); "
        "a download cannot start until it ends."
    )


def _python_files():
    for top in MESSAGE_SOURCES:
        yield from (p for p in (ROOT / top).rglob("*.py") if "migrations" not in p.parts)


def _docstrings(tree) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def test_no_message_puts_a_fixed_article_before_a_value():
    """An f-string "a {x}" or "an {x}" picks the article before knowing the word."""
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.JoinedStr):
                continue
            for before, after in zip(node.values, node.values[1:], strict=False):
                if (
                    isinstance(before, ast.Constant)
                    and isinstance(after, ast.FormattedValue)
                    and re.search(r"(^|\s)(a|an|A|An)\s$", before.value)
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == [], offenders


def test_messages_say_the_hub_with_a_capital():
    offenders = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        docstrings = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and re.search(r"\bthe hub\b", node.value)
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    for path in (ROOT / "templates").rglob("*.html"):
        text = re.sub(r"{#.*?#}|<!--.*?-->", "", path.read_text(), flags=re.S)
        if re.search(r"\bthe hub\b", text) or re.search(r"\ban? {{", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], offenders
