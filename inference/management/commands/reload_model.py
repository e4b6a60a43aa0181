from django.core.management.base import BaseCommand, CommandError

from campaign_express.errors import DomainError
from inference import services
from inference.models import ModelVersion


class Command(BaseCommand):
    help = ("Activate a model version on every bidder now (hot reload): publishes it on "
            "models.update and in the models key-value bucket.")

    def add_arguments(self, parser) -> None:
        parser.add_argument("version", help="the version to serve")
        parser.add_argument("--name", default="offer-scoring")

    def handle(self, *args, version: str, name: str, **options) -> None:
        model_version = ModelVersion.objects.filter(name=name, version=version).first()
        if model_version is None:
            raise CommandError(f"no model version {name} {version}; upload it first")
        if model_version.status not in (ModelVersion.Status.VALIDATED,
                                         ModelVersion.Status.ACTIVE):
            model_version = services.model_version_validate(model_version=model_version)
        try:
            services.model_version_activate(model_version=model_version)
        except DomainError as error:
            raise CommandError(f"{model_version}: {error.message} "
                               f"{model_version.failure_reason}".strip()) from error
        self.stdout.write(f"{model_version} is active; bidders load it now "
                          f"(sha256 {model_version.sha256[:12]}…).")
