"""Factories for the models the tests need."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User

from generation.models import Job


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")


class ImageJobFactory(factory.django.DjangoModelFactory[Job]):
    """A queued image job, not charged: tests that need money go through the services."""

    class Meta:
        model = Job

    user = factory.SubFactory(UserFactory)
    kind = Job.Kind.IMAGE
    prompt = factory.Sequence(lambda n: f"prompt {n}")
    params = factory.LazyFunction(lambda: {"aspect_ratio": "1:1", "image_urls": []})
    quantity = 1
    credit_cost = factory.LazyAttribute(lambda job: job.quantity)
