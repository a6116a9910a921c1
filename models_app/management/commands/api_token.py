from django.contrib.auth import get_user_model

from models_app.errors import InvalidInput, NotFound
from models_app.management.base import ModelyardCommand
from models_app.services import api_token_create


class Command(ModelyardCommand):
    help = "Create an API token for a superuser and print it once."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="A label to tell tokens apart.")

    def handle(self, *args, username, name, **options):
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise NotFound(f"No user named {username!r}.") from None
        if not user.is_superuser:
            raise InvalidInput(f"{username} is not a superuser; the API only admits superusers.")
        _, raw = api_token_create(user=user, name=name)
        self.stdout.write(raw)
