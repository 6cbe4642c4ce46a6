"""The core put together: one object per job, sharing one ``Core``; the job runner with
every job kind's handler registered. ``create_app`` adds the edges around it."""

from __future__ import annotations

from dataclasses import dataclass

from bot.commands import ChatCommands
from bot.core.contacts import ContactCards
from bot.core.context import Core
from bot.core.desk import StaffDesk
from bot.core.facebook_events import FacebookEvents
from bot.core.maintenance import Maintenance
from bot.core.media_links import MediaLinks
from bot.core.pages import PageAdmin
from bot.crypto import TokenBox
from bot.jobs.chat import ChatJobs
from bot.jobs.facebook import FacebookJobs
from bot.jobs.failures import FailureReports
from bot.jobs.moderation import ModerationJobs
from bot.jobs.relay import RelayJobs
from bot.jobs.runner import JobRunner
from bot.metrics import Metrics
from bot.priority import AcksFirst
from bot.storage.db import Database

# what a task is in each chat, for the help text
TASK_IS = {"telegram": "topic", "slack": "message and thread"}


@dataclass
class Parts:
    core: Core
    events: FacebookEvents
    desk: StaffDesk
    pages: PageAdmin
    cards: ContactCards
    maintenance: Maintenance
    commands: ChatCommands
    jobs: JobRunner
    media: MediaLinks  # staff files offered to Facebook; create_app gives it PUBLIC_URL


def assemble(
    db: Database, tokens: TokenBox | None, metrics: Metrics, acks: AcksFirst | None = None
) -> Parts:
    core = Core(db, {}, tokens, metrics, acks=acks)
    events = FacebookEvents(core)
    desk = StaffDesk(core)
    pages = PageAdmin(core)
    cards = ContactCards(core)
    jobs = JobRunner()
    chat = ChatJobs(core)
    chat.register(jobs)
    RelayJobs(core, chat).register(jobs)
    media = MediaLinks(core)
    FacebookJobs(core, media).register(jobs)
    ModerationJobs(core).register(jobs)
    FailureReports(core).register(jobs)
    return Parts(
        core=core,
        events=events,
        desk=desk,
        pages=pages,
        cards=cards,
        maintenance=Maintenance(core, events),
        commands=ChatCommands(pages, desk, cards, where=TASK_IS),
        jobs=jobs,
        media=media,
    )
