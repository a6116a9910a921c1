# TEMPORARY STUB (not committed): replaced by helper branch i11-fit at merge.
from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryEstimate:
    total: int


def memory_estimate(*, facts, n_ctx, n_batch=512):
    return MemoryEstimate(total=int(facts.get("tensor_bytes", 0) * 1.3) + 300 * 1024**2)
