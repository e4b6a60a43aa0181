from collections import Counter

from django.contrib.auth import get_user_model
from django.core.management import call_command

from campaigns.demo import demo_counts, demo_seed
from campaigns.models import Advertiser, AuditEntry, Campaign, Creative

User = get_user_model()


def test_seed_demo_is_idempotent(db):
    first_users = demo_seed()
    counts = demo_counts()
    audit_count = AuditEntry.objects.count()
    second_users = demo_seed()

    assert demo_counts() == counts
    assert AuditEntry.objects.count() == audit_count
    assert [(user.username, user.role) for user in second_users] == [
        (user.username, user.role) for user in first_users]
    assert all(user.password for user in first_users)
    assert not any(user.password for user in second_users)


def test_seed_demo_covers_every_role_state_and_format(db):
    demo_seed()

    counts = demo_counts()
    statuses = Counter(Campaign.objects.values_list("status", flat=True))
    formats = Counter(Creative.objects.values_list("format", flat=True))
    assert counts["advertisers"] >= 2
    assert counts["campaigns"] >= 7
    assert counts["creatives"] >= 12
    assert set(statuses) == set(Campaign.Status.values)
    assert {"banner", "video", "native"} <= set(formats)
    roles = {user.username: sorted(user.groups.values_list("name", flat=True))
             for user in User.objects.all()}
    assert roles == {"ops": ["ops"], "approver": ["approver"], "marketer": ["marketer"],
                     "marketer2": ["marketer"]}
    assert {advertiser.name: [m.username for m in advertiser.marketers.all()]
            for advertiser in Advertiser.objects.all()} == {
        "Contoso Hotels": ["marketer2"], "Northwind Coffee": ["marketer"]}


def test_seeded_campaigns_follow_the_workflow(db):
    demo_seed()

    running = Campaign.objects.get(name="Morning Rush")
    rejected = Campaign.objects.get(name="Spa Retreats")
    assert (running.status, running.approved_by.username, running.created_by.username) == (
        "active", "approver", "marketer")
    assert running.creatives.filter(approval_status="approved").count() == 3
    assert (rejected.status, rejected.review_note) == (
        "rejected", "Claims in the video need substantiation")
    assert list(AuditEntry.objects.filter(entity="campaign", entity_id=running.pk,
                                          action="transition").order_by("id")
                .values_list("from_status", "to_status")) == [
        ("draft", "in_review"), ("in_review", "approved"), ("approved", "active")]


def test_the_seed_demo_command_prints_passwords_once(db, capsys):
    call_command("seed_demo")
    first = capsys.readouterr().out
    call_command("seed_demo")
    second = capsys.readouterr().out

    assert first.startswith("Demo data: 2 advertisers, 10 campaigns, 21 creatives; "
                            "model offer-scoring 1 is active.\n")
    assert first.count("(shown once)") == 4
    assert second.startswith("Demo data: 2 advertisers, 10 campaigns, 21 creatives; "
                             "model offer-scoring 1 is active.\n")
    assert "password:" not in second
    assert second.count("exists; reset its password") == 4


def test_the_seed_demo_command_registers_the_shipped_model_once(db,
                                                                django_capture_on_commit_callbacks):
    from inference.models import ModelVersion

    with django_capture_on_commit_callbacks(execute=True):
        call_command("seed_demo")
        call_command("seed_demo")

    version = ModelVersion.objects.get()
    assert (version.name, version.version, version.status) == ("offer-scoring", "1", "active")
    assert version.validation["loads"] is True
