"""Outbox jobs: typed kinds, validated when read back, found by the runner's registry."""

from __future__ import annotations

import pytest

from bot.errors import DeliveryError
from bot.jobs.kinds import (
    JOB_TYPES,
    BadJob,
    ChatNotice,
    FbAnswer,
    JobKind,
    NoticeInTask,
    Relay,
    decode,
    encode,
)
from bot.jobs.runner import JobRunner
from bot.storage.models import OutboxJob


def test_every_kind_has_one_dataclass() -> None:
    assert set(JOB_TYPES) == set(JobKind)


@pytest.mark.parametrize(
    "job",
    [
        Relay(3, 7),
        FbAnswer(3, 8),
        NoticeInTask(3, "Pick one", reply_to="55", choices=(("Thanks", "q:3:thanks"),)),
        ChatNotice("slack", "C1", "Hi", thread_id="1.2", only_for="W1", report=1),
    ],
)
def test_a_job_comes_back_as_it_was_stored(job: object) -> None:
    payload = encode(job)  # type: ignore[arg-type]
    payload["pace"] = ["tg:chat:-100"]  # the outbox's own keys ride along, ignored here
    assert decode(job.kind, payload) == job  # type: ignore[attr-defined]


def test_payloads_stored_before_the_types_still_decode() -> None:
    """Rows written by the untyped outbox (lists for tuples) read back as typed jobs."""
    old = {"task_id": 4, "text": "Pick", "reply_to": None, "choices": [["A", "q:4:a"]]}
    assert decode("notice_in_task", old) == NoticeInTask(4, "Pick", None, (("A", "q:4:a"),))


@pytest.mark.parametrize(
    ("kind", "payload", "why"),
    [
        ("teleport", {}, "unknown job kind"),
        ("relay", {"task_id": 1}, "bad fields"),
        ("relay", {"task_id": "one", "message_id": 2}, "bad fields"),
    ],
)
def test_a_stored_job_that_is_not_valid_is_refused(
    kind: str, payload: dict[str, object], why: str
) -> None:
    with pytest.raises(BadJob, match=why):
        decode(kind, payload)


async def test_the_runner_calls_the_one_handler_of_a_kind() -> None:
    runner = JobRunner()
    seen: list[object] = []

    async def on_relay(job: Relay, row: OutboxJob) -> None:
        seen.append(job)

    runner.register(Relay, on_relay)
    with pytest.raises(ValueError, match="registered already"):
        runner.register(Relay, on_relay)
    await runner.execute(OutboxJob(kind="relay", payload={"task_id": 1, "message_id": 2}))
    assert seen == [Relay(1, 2)]
    # a kind nobody handles, or a broken payload, fails for good (retrying cannot help)
    for row in (
        OutboxJob(kind="fb_answer", payload={"task_id": 1, "message_id": 2}),
        OutboxJob(kind="relay", payload={"task_id": 1}),
    ):
        with pytest.raises(DeliveryError) as caught:
            await runner.execute(row)
        assert not caught.value.retryable
