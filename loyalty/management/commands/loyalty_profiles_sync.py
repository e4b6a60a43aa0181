"""Write every member's loyalty status into the bidder's profiles again.

For a store that lost its data (a Redis replaced or flushed): profiles are a cache of what
loyalty keeps in the database, and this rebuilds their loyalty part at once instead of
member by member as points move.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from loyalty.services import member_profiles_sync


class Command(BaseCommand):
    help = "Rewrite the loyalty part of every member's profile (after a store lost its data)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--program", type=int, help="only this program's members")

    def handle(self, *args, program: int | None, **options) -> None:
        written = member_profiles_sync(program_id=program)
        self.stdout.write(f"Wrote {written} member profile(s).")
