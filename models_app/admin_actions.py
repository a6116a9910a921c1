"""The admin's one way to run a service per selected item and say what happened to each."""

from django.contrib import messages

from . import services
from .errors import ModelyardError

LEVELS = {"success": messages.SUCCESS, "info": messages.INFO, "error": messages.ERROR}


def each_through_service(
    model_admin, request, items, *, verb: str, call, key, label=None, done=None
) -> list:
    """Call a service once per selected item, say what happened to each; return the answers.

    `call(item)` is the service call; a ModelyardError becomes "Cannot <verb> <key>:
    <code>: <message>" (and no answer). A StartResult answer speaks with its own toast
    (naming the item by `label(item)`); any other answer with `done(item, answer)`.
    """
    answers = []
    for item in items:
        try:
            answer = call(item)
        except ModelyardError as exc:
            model_admin.message_user(
                request, f"Cannot {verb} {key(item)}: {exc.code}: {exc.message}", messages.ERROR
            )
            continue
        if isinstance(answer, services.StartResult):
            level, text = answer.toast(label(item))
        else:
            level, text = "success", done(item, answer)
        model_admin.message_user(request, text, LEVELS[level])
        answers.append(answer)
    return answers
