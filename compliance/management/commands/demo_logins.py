"""Print the demo logins per role and the demo API tokens (local demo only)."""

from django.core.management.base import BaseCommand

from compliance.demo.plant import DEMO_INTEGRATIONS, DEMO_USERS


class Command(BaseCommand):
    help = "Print the demo logins per role and the demo API tokens."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--base-url", default="http://127.0.0.1:8000", help="Where the server listens."
        )

    def handle(self, *args, base_url: str, **options) -> None:
        w = self.stdout.write
        w("Demo logins (local demo only; never use these accounts or tokens elsewhere)")
        w(f"  web: {base_url}/accounts/login/   admin: {base_url}/admin/")
        w("")
        w(f"  {'role':<18} {'username':<10} {'password':<20} may")
        for u in DEMO_USERS:
            w(f"  {u.role:<18} {u.username:<10} {u.password:<20} {u.may}")
        w("")
        w("API tokens (header 'Authorization: Token <token>'; role: integration, API only)")
        w(f"  {'scope':<11} {'integration':<20} {'token':<31} may")
        for i in DEMO_INTEGRATIONS:
            w(f"  {i.scope:<11} {i.name:<20} {i.token:<31} {i.may}")
        read = next(i for i in DEMO_INTEGRATIONS if i.scope == "read")
        w("")
        w("  example:")
        w(f'    curl -H "Authorization: Token {read.token}" {base_url}/api/v1/plant/lines/')
