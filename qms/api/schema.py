"""OpenAPI helpers: choice sets published once, under their own name.

Several resources have a ``kind`` or a ``status`` drawn from different choice sets (unit
kind vs. link kind, unit status vs. hold status). :class:`NamedChoiceField` publishes its
choices as one named schema component (``UnitKind``, ``LinkKind``, ``HoldStatus``, ...)
that every field using the same set refers to, so generated clients get one enum per set.
"""

from __future__ import annotations

from django.db.models import TextChoices
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_choice_field
from rest_framework import serializers


class NamedChoiceField(serializers.ChoiceField):
    """A ``ChoiceField`` over a ``TextChoices`` class, named after it in the schema."""

    def __init__(self, choices_class: type[TextChoices], **kwargs):
        self.enum_name = choices_class.__name__
        super().__init__(choices=choices_class.choices, **kwargs)


class NamedChoiceFieldExtension(OpenApiSerializerFieldExtension):
    target_class = NamedChoiceField

    def get_name(self) -> str:
        return self.target.enum_name

    def map_serializer_field(self, auto_schema, direction) -> dict:
        schema = build_choice_field(self.target)
        schema.pop("x-spec-enum-id", None)
        # Blank and null belong to a field, not to the choice set.
        schema["enum"] = [c for c in schema["enum"] if c not in ("", None)]
        return schema
