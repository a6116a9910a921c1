"""factory_boy factories for the Modelyard models."""

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from collections_app.models import Collection, LLMConfig, UserPreference
from models_app.models import Installation, Model, Operation


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.test")
    password = factory.django.Password("pw-for-tests")


class ModelFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Model

    key = factory.Sequence(lambda n: f"model-{n:05d}")
    repo_id = factory.Sequence(lambda n: f"org{n % 7}/repo-{n:05d}")
    type = "embedding"
    name = factory.Sequence(lambda n: f"Model {n:05d}")
    description = "A model for tests."
    family = "Test"
    parameter_count = 100_000_000
    allow_patterns = ["*.json", "*.safetensors"]
    download_size = factory.Sequence(lambda n: 1_000_000 + n)
    memory_estimates = {"float16": 200_000_000, "int8": 100_000_000}
    tags = ["test"]
    license = "mit"


class InstallationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Installation

    model = factory.SubFactory(ModelFactory)
    commit_hash = factory.Sequence(lambda n: f"{n:040x}")
    size_on_disk = 12345
    files = ["model.safetensors"]
    installed_at = factory.LazyFunction(timezone.now)
    reconciled_at = factory.LazyFunction(timezone.now)


class OperationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Operation

    model = factory.SubFactory(ModelFactory)
    kind = "download"
    state = "queued"


class CollectionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Collection

    name = factory.Sequence(lambda n: f"collection-{n}")
    embedding_model = factory.SubFactory(ModelFactory, type="embedding")


class UserPreferenceFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = UserPreference

    user = factory.SubFactory(UserFactory)


class LLMConfigFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = LLMConfig

    name = factory.Sequence(lambda n: f"tier-{n}")
