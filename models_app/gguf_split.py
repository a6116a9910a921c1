"""Split (sharded) GGUF models: the shards' names from the first one's, their facts together.

llama.cpp's gguf-split (and gguf-py's GGUFWriter with split_max_tensors/split_max_size)
writes `<prefix>-00001-of-00003.gguf` ... `<prefix>-00003-of-00003.gguf` (llama_split_path:
five digits each); the first shard holds every metadata key, each shard the split keys
(split.no from 0, split.count, split.tensors.count) and its own tensors. llama.cpp loads
the model by its first shard and opens the others beside it.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import FormatError, InvalidInput
from .gguf import GGUFHeader

# A split GGUF (llama.cpp's gguf-split, llama_split_path): `<prefix>-00001-of-00003.gguf`,
# five digits each. SHARD_LIKE also catches what only looks like one, to refuse it clearly.
SHARD_NAME_FORMAT = "{prefix}-{no:05d}-of-{count:05d}.gguf"
SHARD_RE = re.compile(r"^(?P<prefix>.+)-(?P<no>[0-9]{5})-of-(?P<count>[0-9]{5})\.gguf$")
SHARD_LIKE = re.compile(r"-[0-9]+-of-[0-9]+\.gguf$", re.IGNORECASE)


def gguf_is_shard_name(name: str) -> bool:
    """Return True for a name shaped like a shard's (`-00001-of-00003.gguf`), well formed or not."""
    return bool(SHARD_LIKE.search(name))


def gguf_shard_names(first: str) -> list[str]:
    """Return the names of every shard of a split GGUF, from its first shard's name, in order.

    `dir/name-00001-of-00003.gguf` gives `dir/name-00001-of-00003.gguf`,
    `dir/name-00002-of-00003.gguf` and `dir/name-00003-of-00003.gguf`: the names llama.cpp
    looks for beside the first file. Raise InvalidInput (naming the expected form) for a name
    that is not a first shard's: not of that form, another shard than the first, a count of
    zero or a number past the count.
    """
    match = SHARD_RE.match(first)
    if match is None or match["prefix"].endswith("/"):
        raise InvalidInput(
            f"{first!r} is not the name of a split GGUF's first shard: it must end in "
            "-00001-of-NNNNN.gguf (five digits each, as llama.cpp's gguf-split names them).",
            details={"file": first},
        )
    no, count = int(match["no"]), int(match["count"])
    if count == 0 or no > count:
        raise InvalidInput(
            f"{first!r} is not a valid shard name: shard {no} of {count}.",
            details={"file": first},
        )
    if no != 1:
        raise InvalidInput(
            f"{first!r} is shard {no} of {count}; name the first shard "
            f"({SHARD_NAME_FORMAT.format(prefix=match['prefix'], no=1, count=count)}): "
            "llama.cpp loads a split model by its first file.",
            details={"file": first, "shard": no, "count": count},
        )
    prefix = match["prefix"]
    return [SHARD_NAME_FORMAT.format(prefix=prefix, no=i, count=count) for i in range(1, count + 1)]


def gguf_file_names(name: str) -> list[str]:
    """Return the files a GGUF entry needs: every shard when `name` is a first shard's, else
    the one file. Raise InvalidInput for a name shaped like a shard's that is not a first one."""
    return gguf_shard_names(name) if gguf_is_shard_name(name) else [name]


def gguf_split_facts(facts: dict[str, Any], shards: list[GGUFHeader]) -> dict[str, Any]:
    """Return a split model's facts: the first shard's, with every shard's weights counted.

    `facts` are gguf_facts of the first shard; `shards` the headers of all shards in order
    (the first included). Raise FormatError when a shard's split keys do not say it is that
    shard of this model (llama.cpp refuses such a set).
    """
    count = len(shards)
    for index, header in enumerate(shards):
        meta = header.metadata
        if meta.get("split.count") != count or meta.get("split.no", 0) != index:
            raise FormatError(
                f"Shard {index + 1} of {count} says it is shard "
                f"{meta.get('split.no', 0) + 1} of {meta.get('split.count', 1)}.",
                details={"shard": index + 1, "count": count},
            )
    total = sum(len(h.tensors) for h in shards)
    declared = shards[0].metadata.get("split.tensors.count")
    if isinstance(declared, int) and declared != total:
        raise FormatError(
            f"The {count} shards hold {total} tensors; the first shard says {declared}.",
            details={"tensors": total, "declared": declared},
        )
    return facts | {
        "tensor_bytes": sum(h.tensor_bytes for h in shards),
        "parameter_count": sum(t.n_elements for h in shards for t in h.tensors),
        "shard_tensor_bytes": [h.tensor_bytes for h in shards],
    }
