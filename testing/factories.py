"""Factories for the models the tests need, and jobs made through the services."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User

from generation.images.services import image_job_create
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


def charged_image_job(user: Any, quantity: int = 1) -> Job:
    """A queued image job, charged through the service as the API would."""
    return image_job_create(
        user_id=user.pk, prompt="a lighthouse", aspect_ratio="1:1", quantity=quantity, image_urls=[]
    )
