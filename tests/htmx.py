"""What the page's htmx reads from an answer, read the same way by the view tests."""

import json


def toast(response) -> dict:
    """Return the toast an answer asks for (its `HX-Trigger`), less its target.

    The target is checked here, once for every caller: the toast is raised on the body,
    where the page's listener is whatever the answer replaced.
    """
    toast = json.loads(response["HX-Trigger"])["toast"]
    assert toast.pop("target") == "body"
    return toast
