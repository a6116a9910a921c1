"""Constants shared by the registry loader and the models; importable without Django set up."""

REPO_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$"
MODEL_KEY_RE = r"^[a-z0-9][a-z0-9._-]*$"
MODEL_TYPES = ("embedding", "llm", "reranker", "splade")
