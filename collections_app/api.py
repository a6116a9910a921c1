"""The collections API; routes arrive with the deletion issue (collections, preferences)."""

from ninja import Router

router = Router(tags=["collections"])
