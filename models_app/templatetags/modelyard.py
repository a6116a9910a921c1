"""Template tags of the Modelyard pages."""

from django import template
from django.utils.html import json_script

from ..models import TERMINAL_STATES, OperationKind

register = template.Library()


@register.simple_tag
def operation_vocabulary():
    """Emit the operation states and kinds the page's script needs, from their one definition."""
    return json_script(
        {"terminal": list(TERMINAL_STATES), "kinds": dict(OperationKind.choices)},
        "operation-vocabulary",
    )
