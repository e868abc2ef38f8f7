"""The operators' admin: lists, filters and searches, read-only pages, and actions that go through the services."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.utils import timezone

from credits.models import CreditLedgerEntry
from credits.selectors import credit_balance, credit_ledger_total
from generation.images.services import image_job_create
from generation.models import Generation, Job
from testing.factories import ImageJobFactory, UserFactory

pytestmark = pytest.mark.django_db

JOBS_URL = "/admin/generation/job/"
ACCOUNTS_URL = "/admin/credits/creditaccount/"
LEDGER_URL = "/admin/credits/creditledgerentry/"


def listed_jobs(response) -> set[Job]:
    return set(response.context["cl"].result_list)


def run_action(client, url, action, objects, **extra):
    """Post an action from a changelist, as the admin's action bar does."""
    data = {"action": action, helpers.ACTION_CHECKBOX_NAME: [str(obj.pk) for obj in objects], "index": 0, **extra}
    return client.post(url, data, follow=True)


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def charged_job(user, quantity=2) -> Job:
    """A queued image job, charged through the service as the API would."""
    return image_job_create(user_id=user.pk, prompt="a red fox", aspect_ratio="1:1", quantity=quantity, image_urls=[])


@pytest.mark.parametrize(
    "query",
    [
        {"kind__exact": "image"},
        {"status__exact": "queued"},
        {"created_at__gte": str(timezone.now() - timedelta(days=7))},
        {"project_id__isempty": "1"},
    ],
)
def test_job_changelist_loads_with_each_filter(admin_client, query):
    job = ImageJobFactory.create()
    response = admin_client.get(JOBS_URL, query)
    assert response.status_code == 200
    assert job in listed_jobs(response)


def test_job_changelist_filters_out_other_statuses(admin_client):
    queued = ImageJobFactory.create()
    failed = ImageJobFactory.create(status=Job.Status.FAILED)
    response = admin_client.get(f"{JOBS_URL}?status__exact=failed")
    assert listed_jobs(response) == {failed}
    assert queued not in listed_jobs(response)


def test_job_changelist_finds_a_job_by_its_id(admin_client):
    job, _other = ImageJobFactory.create_batch(2)
    for term in (str(job.id), str(job.id).upper(), job.id.hex):
        response = admin_client.get(JOBS_URL, {"q": term})
        assert response.status_code == 200
        assert listed_jobs(response) == {job}


def test_job_changelist_finds_jobs_by_prompt_username_and_project(admin_client):
    fox = ImageJobFactory.create(prompt="a red fox in the snow", project_id="campaign-7")
    owl = ImageJobFactory.create(prompt="an owl", user=UserFactory.create(username="marina"))
    assert listed_jobs(admin_client.get(JOBS_URL, {"q": "red fox"})) == {fox}
    assert listed_jobs(admin_client.get(JOBS_URL, {"q": "marina"})) == {owl}
    assert listed_jobs(admin_client.get(JOBS_URL, {"q": "campaign-7"})) == {fox}


def job_with_an_image_and_a_video() -> Job:
    job = ImageJobFactory.create(quantity=2, result_count=2)
    common = {"job": job, "user": job.user, "prompt": job.prompt, "size": 2048}
    Generation.objects.create(index=0, file="generations/a/0.png", mime_type="image/png", **common)
    Generation.objects.create(index=1, file="generations/a/1.mp4", mime_type="video/mp4", **common)
    return job


def test_job_page_is_read_only_and_shows_its_generations(admin_client):
    job = job_with_an_image_and_a_video()
    response = admin_client.get(f"{JOBS_URL}{job.pk}/change/")
    assert response.status_code == 200
    page = response.content.decode()
    # Through links that expire, like the API's.
    assert '<img src="/media/generations/a/0.png?expires=' in page
    assert '<a href="/media/generations/a/1.mp4?expires=' in page
    assert "&amp;signature=" in page
    assert "2.0\xa0KB" in page
    assert 'name="_save"' not in page
    assert admin_client.post(f"{JOBS_URL}{job.pk}/change/", {"prompt": "changed"}).status_code == 403
    assert admin_client.get(f"{JOBS_URL}add/").status_code == 403
    assert admin_client.get(f"{JOBS_URL}{job.pk}/delete/").status_code == 403


def test_generation_changelist_shows_thumbnails_and_finds_files_by_job_id(admin_client):
    job = job_with_an_image_and_a_video()
    other = ImageJobFactory.create()
    Generation.objects.create(
        job=other, user=other.user, index=0, file="b.png", mime_type="image/png", size=1, prompt="x"
    )
    response = admin_client.get("/admin/generation/generation/", {"q": str(job.id)})
    assert response.status_code == 200
    assert {generation.job_id for generation in response.context["cl"].result_list} == {job.id}
    assert '<img src="/media/generations/a/0.png?expires=' in response.content.decode()
    assert admin_client.get("/admin/generation/generation/?mime_type__exact=video/mp4").status_code == 200


def test_retry_now_redispatches_a_queued_job(admin_client, broker, django_capture_on_commit_callbacks):
    job = ImageJobFactory.create(retries=1)
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, JOBS_URL, "retry_now", [job])
    assert response.status_code == 200
    assert broker.client.llen(f"{broker.namespace}:images") == 1
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    assert job.next_run_at is None
    assert messages_of(response) == ["Re-dispatched 1 job."]


def test_retry_now_skips_finished_jobs_and_says_which(admin_client, broker, django_capture_on_commit_callbacks):
    done = ImageJobFactory.create(status=Job.Status.COMPLETED)
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(admin_client, JOBS_URL, "retry_now", [done])
    assert broker.client.llen(f"{broker.namespace}:images") == 0
    assert messages_of(response) == [f"Skipped 1 finished job: {str(done.id)[:8]}."]


def test_fail_and_refund_fails_a_charged_job_and_refunds_it_once(admin_client, make_user):
    job = charged_job(make_user(credits=10))
    assert credit_balance(user_id=job.user_id) == 8
    first = run_action(admin_client, JOBS_URL, "fail_and_refund", [job])
    second = run_action(admin_client, JOBS_URL, "fail_and_refund", [job])
    job.refresh_from_db()
    assert job.status == Job.Status.FAILED
    assert job.error_code == "failed_by_operator"
    assert job.error_message == "Failed by an operator."
    assert credit_balance(user_id=job.user_id) == credit_ledger_total(user_id=job.user_id) == 10
    assert CreditLedgerEntry.objects.filter(job=job, kind=CreditLedgerEntry.Kind.REFUND).count() == 1
    assert messages_of(first) == ["Failed 1 job and refunded what it did not deliver."]
    assert messages_of(second) == [f"Skipped 1 finished job: {str(job.id)[:8]}."]


def test_staff_who_may_only_view_jobs_cannot_fail_them(client, make_user):
    viewer = UserFactory.create(is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_job"))
    client.force_login(viewer)
    job = charged_job(make_user(credits=10))
    assert client.get(JOBS_URL).status_code == 200
    run_action(client, JOBS_URL, "fail_and_refund", [job])
    job.refresh_from_db()
    assert job.status == Job.Status.QUEUED
    assert credit_balance(user_id=job.user_id) == 8


def test_grant_credits_asks_for_an_amount_then_grants_it(admin_client, make_user):
    alice = make_user(credits=3)
    form = run_action(admin_client, ACCOUNTS_URL, "grant_credits", [alice.credit_account])
    assert form.status_code == 200
    assert form.templates[0].name == "admin/credits/grant_credits.html"
    assert 'name="amount"' in form.content.decode()
    assert credit_balance(user_id=alice.pk) == 3

    # The form posts back what the template holds: the action, the selected ids and the fields, but no "index".
    submitted = {"action": "grant_credits", helpers.ACTION_CHECKBOX_NAME: [alice.credit_account.pk], "apply": "1"}
    granted = admin_client.post(ACCOUNTS_URL, {**submitted, "amount": 5, "note": "welcome"}, follow=True)
    assert granted.status_code == 200
    assert credit_balance(user_id=alice.pk) == credit_ledger_total(user_id=alice.pk) == 8
    entry = CreditLedgerEntry.objects.filter(account__user=alice).first()
    assert entry is not None
    assert (entry.kind, entry.amount, entry.note) == (CreditLedgerEntry.Kind.GRANT, 5, "welcome")
    assert entry.created_by == granted.wsgi_request.user
    assert messages_of(granted) == ["Granted 5 credits to 1 account."]


def test_grant_credits_refuses_an_amount_below_one(admin_client, make_user):
    alice = make_user(credits=3)
    response = run_action(admin_client, ACCOUNTS_URL, "grant_credits", [alice.credit_account], amount=0, apply="1")
    assert response.status_code == 200
    assert response.context["form"].errors["amount"]
    assert credit_balance(user_id=alice.pk) == 3


def test_account_page_shows_the_ledger_newest_first_and_a_read_only_balance(admin_client, make_user):
    alice = make_user(credits=3)
    charged_job(alice, quantity=1)
    response = admin_client.get(f"{ACCOUNTS_URL}{alice.credit_account.pk}/change/")
    assert response.status_code == 200
    assert 'name="balance"' not in response.content.decode()
    (ledger,) = response.context["inline_admin_formsets"]
    assert [form.instance.kind for form in ledger.formset.forms] == ["charge", "grant"]
    found = admin_client.get(ACCOUNTS_URL, {"q": alice.username}).context["cl"].result_list
    assert [account.user for account in found] == [alice]


def test_ledger_entries_can_be_viewed_but_not_changed_or_deleted(admin_client, make_user):
    entry = CreditLedgerEntry.objects.get(account__user=make_user(credits=4))
    assert admin_client.get(LEDGER_URL, {"q": "granted"}).status_code == 200
    view = admin_client.get(f"{LEDGER_URL}{entry.pk}/change/")
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    assert admin_client.post(f"{LEDGER_URL}{entry.pk}/change/", {"note": "rewritten"}).status_code == 403
    assert admin_client.post(f"{LEDGER_URL}{entry.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get(f"{LEDGER_URL}add/").status_code == 403
    entry.refresh_from_db()
    assert entry.note == "test"


def test_ledger_entries_can_be_found_by_job_id(admin_client, make_user):
    job = charged_job(make_user(credits=10))
    response = admin_client.get(LEDGER_URL, {"q": str(job.id)})
    assert [entry.job_id for entry in response.context["cl"].result_list] == [job.id]


def test_admin_sends_users_without_staff_status_to_the_login_page(client, make_user):
    client.force_login(make_user())
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_video_jobs_show_their_queue_position_and_slot_state(admin_client, make_user):
    from generation.videos.services import video_job_create
    from generation.videos.slots import video_slots

    owner = make_user(credits=100)
    running = video_job_create(user_id=owner.pk, prompt="running take", aspect_ratio="16:9", duration=4)
    video_job_create(user_id=owner.pk, prompt="waiting take", aspect_ratio="16:9", duration=4)
    Job.objects.filter(id=running.id).update(
        status="processing", stage="generating", operation_name="models/veo/operations/1"
    )
    slots = video_slots()
    slots.acquire(str(running.id))
    try:
        page = admin_client.get("/admin/generation/job/").content.decode()
        assert "slot held" in page
        assert "position 1" in page
        assert "?stage__exact=generating" in page
        detail = admin_client.get(f"/admin/generation/job/{running.id}/change/").content.decode()
        assert "models/veo/operations/1" in detail
    finally:
        slots.release(str(running.id))
    assert "no live slot" in admin_client.get("/admin/generation/job/").content.decode()
