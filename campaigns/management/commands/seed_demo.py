from django.core.management.base import BaseCommand

from campaigns.demo import demo_counts, demo_seed


class Command(BaseCommand):
    help = "Create demo advertisers, campaigns in every state, creatives and users (idempotent)."

    def handle(self, *args, **options) -> None:
        users = demo_seed()
        counts = demo_counts()
        self.stdout.write("Demo data: {advertisers} advertisers, {campaigns} campaigns, "
                          "{creatives} creatives.".format(**counts))
        for user in users:
            if user.password:
                self.stdout.write(f"  {user.role:9} {user.username:10} password: "
                                  f"{user.password}   (shown once)")
            else:
                self.stdout.write(f"  {user.role:9} {user.username:10} exists; reset its "
                                  f"password with: manage.py changepassword {user.username}")
