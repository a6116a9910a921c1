import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction


class Command(BaseCommand):
    help = (
        "Create the first superuser if there is none. Credentials come from "
        "MODELYARD_ADMIN_USER / MODELYARD_ADMIN_PASSWORD / MODELYARD_ADMIN_EMAIL; "
        "without a password one is generated and printed once."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        username = settings.MODELYARD_ADMIN_USER
        given = settings.MODELYARD_ADMIN_PASSWORD
        password = given or secrets.token_urlsafe(12)
        with transaction.atomic():
            if User.objects.filter(is_superuser=True).exists():
                self.stdout.write("A superuser exists already; nothing to do.")
                return
            User.objects.create_superuser(
                username=username, email=settings.MODELYARD_ADMIN_EMAIL, password=password
            )
        if given:
            self.stdout.write(f"Superuser {username!r} created with MODELYARD_ADMIN_PASSWORD.")
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"Superuser created. Username: {username}  Password: {password}  "
                    "(shown once; change it in the admin)"
                )
            )
