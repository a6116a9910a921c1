"""Words that messages build from a value: "an embedding model", "a SPLADE model", "an LLM".

Every message that puts an article before a model type or an operation kind goes through
`with_article`, so that none says "a embedding" or "a update".
"""

from .models import ModelType

# Letters whose spoken name starts with a vowel sound ("el", "em", "aitch").
_VOWEL_SOUND_LETTERS = frozenset("AEFHILMNORSX")


def with_article(word: str) -> str:
    """Return `word` after "a" or "an", chosen by how it is spoken.

    A word in capitals without a vowel is an acronym read letter by letter ("an LLM",
    "an HF token"); any other word is read as written ("a SPLADE", "an update").
    """
    if word.isupper() and not set(word) & set("AEIOU"):
        vowel_sound = word[:1] in _VOWEL_SOUND_LETTERS
    else:
        vowel_sound = word[:1].lower() in "aeiou"
    return f"{'an' if vowel_sound else 'a'} {word}"


def type_label(model_type: str) -> str:
    """Return a model type as it reads inside a sentence: "embedding", "LLM", "SPLADE".

    A value that is not a type (a caller's bad input, quoted back) stays as it is.
    """
    if model_type not in ModelType.values:
        return model_type
    label = ModelType(model_type).label
    return label if label.isupper() else label.lower()
