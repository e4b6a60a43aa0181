from django.core.management.base import BaseCommand

from campaigns.demo import demo_counts, demo_seed
from inference.services import model_default_register


class Command(BaseCommand):
    help = ("Create demo advertisers, campaigns in every state, creatives and users, and register "
            "the shipped scoring model (idempotent).")

    def handle(self, *args, **options) -> None:
        users = demo_seed()
        model = model_default_register()
        counts = demo_counts()
        self.stdout.write("Demo data: {advertisers} advertisers, {campaigns} campaigns, "
                          "{creatives} creatives; model {model} is {status}.".format(
                              **counts, model=model, status=model.status))
        for user in users:
            if user.password:
                self.stdout.write(f"  {user.role:9} {user.username:10} password: "
                                  f"{user.password}   (shown once)")
            else:
                self.stdout.write(f"  {user.role:9} {user.username:10} exists; reset its "
                                  f"password with: manage.py changepassword {user.username}")
