"""The API's contract in one place: the input rule, the error body, each operation's responses.

The input rule: every string from a path, a query or a body is declared with one of the
types below. None holds a control character (Unicode Cc: NUL, which PostgreSQL cannot
store and SQLite would, escapes, DEL, C1), except that free text (a description) may hold
tab, newline and carriage return; each has a maximum length. Integers are bounded, so
that no page number overflows the database; booleans are strict (JSON true/false in a
body, `true`/`false` in a query). The types put the rule in the OpenAPI spec (pattern,
maxLength, minimum/maximum), and pydantic enforces it before a view runs: 422
ERR_INVALID with the field in `details`.
"""

from typing import Annotated, Any

from ninja import Schema
from pydantic import BeforeValidator, ConfigDict, Field, StrictBool, StringConstraints

from .errors import ERROR_STATUSES

# No C0 control, no DEL, no C1 control. Anchored for JSON Schema, where a pattern searches.
_LINE = "\\x00-\\x1f\\x7f-\\x9f"
_TEXT = "\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f"  # tab, newline and CR allowed
LINE_PATTERN = f"^[^{_LINE}]*$"
TEXT_PATTERN = f"^[^{_TEXT}]*$"
# A name the services strip: at least one character that is not whitespace.
NAME_PATTERN = f"^[^{_LINE}]*[^\\s{_LINE}][^{_LINE}]*$"

MAX_ID = 2**63 - 1  # a bigint primary key
MAX_PAGE = 1_000_000
MAX_TEXT = 10_000

# A registry key, as a path segment or a body field; an unknown one is 404.
ModelKey = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=LINE_PATTERN)]
# A free line of text: a search, an operation filter.
Line = Annotated[str, StringConstraints(max_length=200, pattern=LINE_PATTERN)]
# A name that must not be blank once stripped (collections, LLM configs).
CollectionName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=NAME_PATTERN)
]
ConfigName = Annotated[str, StringConstraints(min_length=1, max_length=50, pattern=NAME_PATTERN)]
# Free text: a description. The one kind of string that may hold tab and newline.
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT, pattern=TEXT_PATTERN)]
# A primary key in a path.
Id = Annotated[int, Field(ge=1, le=MAX_ID)]
Page = Annotated[int, Field(ge=1, le=MAX_PAGE)]
Limit = Annotated[int, Field(ge=1, le=200)]
# A JSON boolean in a body: "yes", 1 and "true" are refused.
Bool = StrictBool


def _query_bool(value: Any) -> Any:
    # A query string holds text; only the two spellings OpenAPI clients send are booleans.
    if isinstance(value, str):
        if value in ("true", "false"):
            return value == "true"
        raise ValueError("must be true or false")
    return value


QueryBool = Annotated[StrictBool, BeforeValidator(_query_bool)]


def _drop_default(schema: dict) -> None:
    schema.pop("default", None)


def omittable() -> Any:
    """Declare a body field that may be left out but not sent as null.

    Its Python default (None: "not sent") is no value of its type, so the spec shows none;
    a null sent is refused like any value of the wrong type.
    """
    return Field(None, json_schema_extra=_drop_default)


class Input(Schema):
    """The base of every request body: a field the schema does not name is refused."""

    model_config = ConfigDict(extra="forbid")


class ErrorOut(Schema):
    """The one error body: a stable code, a message for people, details for programs."""

    code: str = Field(..., examples=["ERR_NOT_FOUND"])
    message: str
    details: dict[str, Any]


# Every operation requires a superuser: 401 without credentials, 403 for anyone else.
AUTH_STATUSES = (401, 403)


def responses(ok: Any, *errors: int) -> dict[int, Any]:
    """Return an operation's response map: its success schema(s) and its error statuses.

    `ok` is a schema (for 200) or a {status: schema} map; `errors` are the statuses the
    operation answers with the error body besides 401 and 403 (404, 409, 422, ...).
    """
    statuses = dict(ok) if isinstance(ok, dict) else {200: ok}
    for status in (*AUTH_STATUSES, *errors):
        if status not in ERROR_STATUSES:
            raise ValueError(f"{status} is not an error status of the API")
        statuses[status] = ErrorOut
    return dict(sorted(statuses.items()))
