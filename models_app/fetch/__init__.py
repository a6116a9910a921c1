"""Transfer the bytes of one blob: resumable across processes, retried, verified, cancellable.

huggingface_hub 2.4 does not resume across processes, does not retry a reset or a 5xx in the
middle of a body and never hashes what it downloads, so the byte transfer is ours; the URLs,
auth headers, HTTP client and cache layout stay the library's. Nothing here knows Django:
every knob is an argument.

The partial file has a stable name chosen by the caller, so any later process resumes it; a
sidecar next to it (`<partial>.json`) keeps the validator (ETag or Last-Modified) that guards
the resume with `If-Range`. The blob becomes `final` only after its size and hashes matched.
"""

from .blob import fetch_blob
from .spec import BlobSpec, RetryPolicy

__all__ = ["BlobSpec", "RetryPolicy", "fetch_blob"]
