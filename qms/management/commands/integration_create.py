"""Create an API integration and print its token once.

    python manage.py integration_create mes-gf1 --scope read_write

Only the SHA-256 of the token is stored: copy it from this output into the plant system's
configuration; a lost token means a new integration.
"""

from django.core.management.base import BaseCommand, CommandError

from qms.api.authentication import integration_create
from qms.choices import IntegrationScope
from qms.exceptions import DomainError


class Command(BaseCommand):
    help = "Create an API integration (read or read_write scope) and print its token once."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The plant system, e.g. mes-gf1 or plc-gateway-l1.")
        parser.add_argument(
            "--scope",
            choices=IntegrationScope.values,
            default=IntegrationScope.READ,
            help="read (default) or read_write.",
        )

    def handle(self, *args, name: str, scope: str, **options):
        try:
            integration, key = integration_create(name=name, scope=scope)
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(
            f"Integration {integration.name!r} created with scope {integration.scope}. "
            "Its token is printed once below; only its hash is stored."
        )
        self.stdout.write(key)
