"""Cursor pagination: stable and cheap on the largest tables (no COUNT, no OFFSET)."""

from rest_framework.pagination import CursorPagination


class DefaultCursorPagination(CursorPagination):
    """Newest first by id; ``?page_size=`` up to 1000; ``next``/``previous`` are opaque."""

    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000
    ordering = "-id"


class OldestFirstCursorPagination(DefaultCursorPagination):
    """For master data and members of a set, read in the order they were made."""

    ordering = "id"
