"""Load and validate the model registry: the curated registry/*.yaml and any extra files.

Pure: no database, no settings. The caller (services.registry_sync) passes the paths;
every problem raises RegistryError naming the file, the entry and the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .constants import MODEL_KEY_RE, MODEL_TYPES, REPO_ID_RE
from .errors import InvalidInput, RegistryError
from .gguf_split import gguf_file_names

POOLING_MODES = ("cls", "mean", "last_token", "max")
SHA256_RE = r"^[0-9a-f]{64}$"
TAG_RE = r"^[a-z0-9][a-z0-9.+-]*$"

NonNegativeInt = Annotated[int, Field(ge=0)]
# Strict mode would refuse the plain strings YAML gives for an enum; a Literal takes them.
ModelTypeValue = Literal[MODEL_TYPES]  # type: ignore[valid-type]
PoolingMode = Literal[POOLING_MODES]  # type: ignore[valid-type]


class RegistryFiles(BaseModel):
    """What one use of the entry needs from its repo: one GGUF file, or a snapshot.

    A split GGUF is named by its first shard (`name-00001-of-00003.gguf`); the entry then
    needs every shard (Model.file_patterns).
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    gguf: str | None = Field(default=None, max_length=300)
    allow_patterns: list[Annotated[str, Field(min_length=1)]] | None = None

    @field_validator("gguf")
    @classmethod
    def _gguf_filename(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.endswith(".gguf"):
            raise ValueError(f"must be a .gguf filename (got {value!r})")
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"must be a path inside the repo (got {value!r})")
        try:
            gguf_file_names(value)  # a split model is named by its first shard
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> RegistryFiles:
        if bool(self.gguf) == bool(self.allow_patterns):
            raise ValueError("set exactly one of 'gguf' and 'allow_patterns'")
        return self


PositiveInt = Annotated[int, Field(ge=1)]
# The types whose GGUF files the built-in runtime (llama.cpp) serves.
GGUF_TYPES = ("llm", "embedding", "reranker")


class RegistryGGUFFacts(BaseModel):
    """What a GGUF entry's header will say, for its memory estimate before it is installed.

    The names are models_app/gguf.py's facts; the installed file's header replaces them.
    """

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    architecture: str = Field(min_length=1, max_length=50)
    block_count: PositiveInt
    embedding_length: PositiveInt
    head_count: PositiveInt
    head_count_kv: PositiveInt
    key_length: PositiveInt  # the head dim of keys
    value_length: PositiveInt
    context_length: PositiveInt
    vocab_size: PositiveInt

    @model_validator(mode="after")
    def _kv_heads_within_heads(self) -> RegistryGGUFFacts:
        if self.head_count_kv > self.head_count or self.head_count % self.head_count_kv:
            raise ValueError(
                f"head_count_kv ({self.head_count_kv}) must divide head_count ({self.head_count})"
            )
        return self


class RegistryEntry(BaseModel):
    """One registry entry as written in YAML, validated."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    key: str = Field(pattern=MODEL_KEY_RE, max_length=200)
    repo_id: str = Field(pattern=REPO_ID_RE, max_length=200)
    revision: str = Field(default="main", min_length=1, max_length=100)
    type: ModelTypeValue
    name: str = Field(max_length=200)
    description: str
    family: str | None = Field(default=None, max_length=100)
    parameter_count: NonNegativeInt | None = None
    quantization: str | None = Field(default=None, max_length=50)
    files: RegistryFiles
    download_size: NonNegativeInt | None = None
    context_window: NonNegativeInt | None = None
    embedding_dimension: NonNegativeInt | None = None
    pooling: PoolingMode | None = None
    query_prefix: str | None = None
    document_prefix: str | None = None
    memory_estimates: dict[str, NonNegativeInt] | None = None
    ram_required: NonNegativeInt | None = None
    gguf_facts: RegistryGGUFFacts | None = None
    sha256: dict[str, Annotated[str, Field(pattern=SHA256_RE)]] | None = None
    recommended: bool = False
    tags: list[Annotated[str, Field(pattern=TAG_RE, max_length=40)]] | None = None
    license: str | None = Field(default=None, max_length=100)

    _registry_file: str = PrivateAttr(default="")

    @field_validator("name", "description")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("files")
    @classmethod
    def _gguf_type(cls, value: RegistryFiles, info: ValidationInfo) -> RegistryFiles:
        # `type` is declared before `files`, so it is in info.data when it was valid.
        if value.gguf and info.data.get("type", "llm") not in GGUF_TYPES:
            raise ValueError(
                "a GGUF file needs type 'llm', 'embedding' or 'reranker' "
                f"(type is {info.data['type']!r})"
            )
        return value

    @field_validator("gguf_facts")
    @classmethod
    def _facts_of_a_gguf(
        cls, value: RegistryGGUFFacts | None, info: ValidationInfo
    ) -> RegistryGGUFFacts | None:
        files = info.data.get("files")
        if value is not None and files is not None and not files.gguf:
            raise ValueError("only an entry with a GGUF file has GGUF facts")
        return value

    @property
    def gguf_file(self) -> str | None:
        return self.files.gguf

    @property
    def allow_patterns(self) -> list[str] | None:
        return self.files.allow_patterns

    @property
    def registry_file(self) -> str:
        """Return the file this entry was loaded from, as the caller named it."""
        return self._registry_file

    def model_fields_for_db(self) -> dict[str, Any]:
        """Return the kwargs for models_app.models.Model that come from the YAML (not `key`)."""
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "type": self.type,
            "name": self.name,
            "description": self.description,
            "family": self.family or "",
            "parameter_count": self.parameter_count,
            "quantization": self.quantization or "",
            "gguf_file": self.files.gguf or "",
            "allow_patterns": list(self.files.allow_patterns or []),
            "download_size": self.download_size,
            "context_window": self.context_window,
            "embedding_dimension": self.embedding_dimension,
            "pooling": self.pooling or "",
            "query_prefix": self.query_prefix or "",
            "document_prefix": self.document_prefix or "",
            "memory_estimates": dict(self.memory_estimates or {}),
            "ram_required": self.ram_required,
            # Marked as the registry's: the installed file's header replaces them.
            "gguf_facts": (
                self.gguf_facts.model_dump() | {"source": "registry"} if self.gguf_facts else {}
            ),
            "sha256": dict(self.sha256 or {}),
            "recommended": self.recommended,
            "tags": list(self.tags or []),
            "license": self.license or "",
        }


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with the same key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _error(file: str, message: str, *, entry: str = "", field: str = "") -> RegistryError:
    where = file
    if entry:
        where += f": entry {entry}"
    if field:
        where += f" field {field!r}"
    return RegistryError(f"{where}: {message}", file=file, entry=entry, field=field)


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _describe(err: dict[str, Any]) -> str:
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "greater_than_equal":
        return f"must be ≥ {ctx['ge']} (got {value!r})"
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']} (got {value!r})"
    if kind in ("literal_error", "enum"):
        return f"must be one of {ctx['expected']} (got {value!r})"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return f"{err['msg'][0].lower()}{err['msg'][1:]} (got {value!r})"


def _entry_label(raw: dict[str, Any], index: int) -> str:
    key = raw.get("key")
    if isinstance(key, str) and re.match(MODEL_KEY_RE, key):
        return repr(key)
    return f"#{index + 1}"


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_registry_file(path: Path) -> list[RegistryEntry]:
    """Return the validated entries of one registry file; raise RegistryError on any problem.

    Entries without a usable key are named by their 1-based position, `#3`.
    """
    file = _display(Path(path))
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _error(file, "registry file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _error(file, f"cannot read registry file: {exc}") from None
    try:
        # A SafeLoader subclass: no arbitrary Python objects.
        document = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise _error(file, f"invalid YAML: {problem}{at}") from None

    if not isinstance(document, dict) or "models" not in document:
        raise _error(file, "the top level must be a mapping with a 'models' list", field="models")
    extra = sorted(str(k) for k in document if k != "models")
    if extra:
        raise _error(file, "is not a known top-level field", field=extra[0])
    raw_entries = document["models"]
    if not isinstance(raw_entries, list):
        got = type(raw_entries).__name__
        raise _error(file, f"must be a list of entries (got {got})", field="models")

    entries: list[RegistryEntry] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(raw_entries):
        if not isinstance(raw, dict):
            got = type(raw).__name__
            raise _error(file, f"must be a mapping (got {got})", entry=f"#{index + 1}")
        label = _entry_label(raw, index)
        try:
            entry = RegistryEntry.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = _field_path(first["loc"])
            raise _error(file, _describe(first), entry=label, field=field) from None
        if entry.key in first_index:
            raise _error(
                file,
                f"duplicate key (entry #{first_index[entry.key] + 1} has it too)",
                entry=label,
                field="key",
            )
        first_index[entry.key] = index
        entry._registry_file = file
        entries.append(entry)
    return entries


def load_registry(paths: Iterable[Path]) -> list[RegistryEntry]:
    """Return the entries of all files in order; a key defined in two files is an error."""
    entries: list[RegistryEntry] = []
    seen: dict[str, str] = {}
    for path in paths:
        for entry in load_registry_file(path):
            if entry.key in seen:
                raise _error(
                    entry.registry_file,
                    f"duplicate key, already defined in {seen[entry.key]}",
                    entry=repr(entry.key),
                    field="key",
                )
            seen[entry.key] = entry.registry_file
            entries.append(entry)
    return entries


def registry_paths(*, registry_dir: Path, extra_files: Iterable[str]) -> list[Path]:
    """Return the shipped *.yaml files in registry_dir, sorted, then the extra files.

    Relative extra paths resolve against the current directory; blanks and files
    already listed are skipped.
    """
    paths = sorted(Path(registry_dir).glob("*.yaml"))
    seen = {p.resolve() for p in paths}
    for name in extra_files:
        if not str(name).strip():
            continue
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if path.resolve() not in seen:
            seen.add(path.resolve())
            paths.append(path)
    return paths
