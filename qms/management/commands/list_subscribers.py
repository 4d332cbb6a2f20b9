"""List every domain event and who reacts to it."""

from django.core.management.base import BaseCommand

from qms import events


class Command(BaseCommand):
    help = "List every domain event type and the subscribers that react to it."

    def handle(self, *args, **options) -> None:
        subs = events.subscriptions()
        for event_type in events.event_types():
            self.stdout.write(f"{event_type.__module__}.{event_type.__qualname__}")
            mine = [s for s in subs if s.event_type is event_type]
            if not mine:
                self.stdout.write("    (no subscribers)")
            for s in mine:
                self.stdout.write(f"    -> [{s.app_label}] {s.handler_path}: {s.description}")
