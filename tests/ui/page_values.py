"""The Reenact tab's panel values as the page sends them, for API calls in the tests."""

from __future__ import annotations

from magicportrait.pipelines.animate import AnimateConfig
from magicportrait.ui.forms import UNSET_CHOICE, form_fields
from magicportrait.ui.studio import ADVANCED_FIELDS, MOTION_FIELDS

FIELDS = form_fields(AnimateConfig, MOTION_FIELDS) + form_fields(AnimateConfig, ADVANCED_FIELDS)


def page_values(**changes) -> list:
    """Every motion and advanced field at its default (blank for none, "default" for an unset choice),
    ``changes`` applied."""
    unset = {"choice": UNSET_CHOICE}
    values = {field.name: (unset.get(field.kind, "") if field.default is None else field.default) for field in FIELDS}
    values.update(changes)
    return [values[field.name] for field in FIELDS]
