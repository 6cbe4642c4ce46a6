"""Staff answers to Facebook: posted once, and looked for before they are posted again."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot import routing
from bot.core import answer_parts
from bot.core.context import Core
from bot.core.media_links import MediaLinks
from bot.domain import MessageState
from bot.errors import DeliveryError
from bot.jobs.kinds import FbAnswer, FbPrivateReply, MarkDelivered, NoticeInTask
from bot.jobs.runner import JobRunner
from bot.storage.models import Message, OutboxJob, Page, Task
from bot.storage.repositories import message_view, task_view

log = logging.getLogger(__name__)


# A file's message is looked for among those Facebook dates from this long before its send
# began: Facebook's clock and ours differ a little, and it dates in whole seconds.
CLOCK_SLACK = timedelta(seconds=30)


class FacebookJobs:
    def __init__(self, core: Core, media: MediaLinks | None = None) -> None:
        self.core = core
        self.media = media  # where staff files get the URL Facebook fetches them from

    def register(self, runner: JobRunner) -> None:
        runner.register(FbAnswer, self.answer)
        runner.register(FbPrivateReply, self.private_reply)

    async def _rows(
        self, s: AsyncSession, message_id: int
    ) -> tuple[Message | None, Task | None, Message | None, Page | None]:
        """A staff answer not delivered yet, its task, the message it answers, the Page;
        nothing when it is gone or delivered already."""
        repo = self.core.repo
        msg = await repo.messages.get(s, message_id)
        if msg is None or msg.state == MessageState.DELIVERED:
            return None, None, None, None
        task = await repo.tasks.get(s, msg.task_id)
        target = (
            await repo.messages.get(s, msg.answers_message_id) if msg.answers_message_id else None
        )
        page = await repo.pages.get(s, task.page_id) if task else None
        return msg, task, target, page

    async def answer(self, job: FbAnswer, row: OutboxJob) -> None:
        repo = self.core.repo
        async with self.core.db.read() as s:
            msg, task, target, page = await self._rows(s, job.message_id)
            if msg is None:
                return
            latest_on_channel = (
                await repo.messenger.latest_customer_on_channel(s, task.id, task.channel)
                if task is not None and target is not None
                else None
            )
        if task is None or target is None or page is None or target.fb_id is None:
            if msg.fb_id is not None:
                if task is not None:
                    await self.delivered(task, msg.id, msg.fb_id)
                return
            raise DeliveryError("the message it answers is gone", retryable=False)
        to = routing.answer_destination(
            task_view(task),
            message_view(target),
            message_view(latest_on_channel) if latest_on_channel else None,
        )
        media = [
            (str(m.get("type") or "file"), str(m.get("file_id") or "")) for m in msg.media or ()
        ]
        calls = (
            routing.answer_calls(
                to, msg.text, media, instagram=routing.is_instagram_media(task.post_id)
            )
            if not isinstance(to, routing.Refuse)
            else to
        )
        left = (
            [c for c in calls if not answer_parts.on_facebook(msg, c)]
            if isinstance(calls, list)
            else []
        )
        ids = answer_parts.PartIds(msg)
        known = ids.first()
        if known is not None and not left:
            # the webhook's echo of this answer (of each of its parts) came back before
            # Facebook's answer to our POST, or after an unclear failure: say so once
            await self.delivered(task, msg.id, known)
            return
        if isinstance(to, routing.Refuse):
            raise DeliveryError(to.reason, retryable=False)
        if isinstance(calls, routing.Refuse):
            raise DeliveryError(calls.reason, retryable=False)
        graph = self.core.graph
        if graph is None:
            raise DeliveryError("Facebook is not configured", retryable=False)
        token = self.core.page_token(page)
        rule: routing.SendRule | None = None
        if isinstance(to, routing.MessengerSend):
            async with self.core.db.read() as s:
                last = await repo.messenger.last_from_person(s, to.psid)
            decided = routing.messenger_send_rule(
                last, datetime.now(UTC), written_by_person=job.human
            )
            if isinstance(decided, routing.Refuse):
                raise DeliveryError(decided.reason, retryable=False)
            rule = decided
        text_call = next((c for c in left if c.part is None), None)
        if (
            text_call is not None
            and msg.text
            and (msg.state == MessageState.SENDING or row.attempts > 0)
        ):
            # An earlier try may have reached Facebook and still failed here (a timeout,
            # a dropped connection, a 5xx after the write): look before sending again.
            if isinstance(to, routing.MessengerSend):
                found = await graph.find_sent_message(page.id, to.psid, msg.text, token)
            else:
                found = await graph.find_comment_reply(to.comment_id, page.id, msg.text, token)
            async with self.core.db.read() as s:
                taken = await repo.messages.by_fb_id(s, found) if found else None
            if found and taken is None:
                if left == [text_call]:
                    log.info(
                        "answer found on Facebook, not sent again", extra={"message_id": msg.id}
                    )
                    await self.delivered(task, msg.id, found)
                    return
                await self._keep(msg.id, None, found)  # the text went: its files are still to send
                ids.text = found
                left.remove(text_call)
        # every file's link first: one that cannot be handed on (gone, too big, not a
        # file) stops the answer before any part of it goes out
        urls = [
            await self._media_url(task.chat_platform, c.attachment[1]) if c.attachment else None
            for c in left
        ]
        if msg.state != MessageState.SENDING:
            # on disk before the call, so that a retry after any crash looks first
            async with self.core.tx(durable=True) as s:
                sending = await repo.messages.get(s, msg.id)
                assert sending is not None
                sending.state = MessageState.SENDING
        for i, (call, url) in enumerate(zip(left, urls, strict=True)):
            if call.part is not None:
                assert isinstance(to, routing.MessengerSend)
                found = await self._file_found(msg, call.part, page.id, to.psid, token, task.id)
                if found is not None:
                    ids.files[call.part] = found
                    continue
                await self._keep_sending(msg.id, call.part)
            fb_id = await self._post(task, to, rule, token, msg.id, call, url)
            if call.part is not None:
                ids.files[call.part] = fb_id
                await self._keep(msg.id, call.part, fb_id)
            else:
                ids.text = fb_id
                if i < len(left) - 1:
                    await self._keep(msg.id, None, fb_id)  # its files follow
        notes = [n for n in (routing.rerouted_note(to), rule.note if rule else None) if n]
        await self.delivered(task, msg.id, ids.first(), notes=notes)

    async def _post(
        self,
        task: Task,
        to: routing.CommentReply | routing.MessengerSend,
        rule: routing.SendRule | None,
        token: str,
        message_id: int,
        call: routing.AnswerCall,
        url: str | None,
    ) -> str:
        """One call of an answer to Facebook; the id Facebook gives what it stored."""
        graph = self.core.graph
        assert graph is not None
        if isinstance(to, routing.MessengerSend):
            assert rule is not None
            return await graph.send_message(
                to.psid,
                call.text,
                token,
                messaging_type=rule.messaging_type,
                tag=rule.tag,
                metadata=routing.send_metadata(message_id, call.part),
                attachment=(call.attachment[0], url)
                if call.attachment is not None and url is not None
                else None,
            )
        if routing.is_instagram_media(task.post_id):
            # an Instagram comment: answers go to its replies edge
            return await graph.reply_to_ig_comment(to.comment_id, call.text, token)
        return await graph.reply_to_comment(to.comment_id, call.text, token, attachment_url=url)

    async def _keep(self, message_id: int, part: int | None, fb_id: str) -> None:
        """A part of the answer (its text: ``part`` None) is on Facebook: its id is kept at
        once, so that a retry sends only the rest."""
        async with self.core.tx() as s:
            row = await s.get(Message, message_id, with_for_update=True)
            assert row is not None
            if part is not None:
                row.media = answer_parts.with_part(
                    row.media, part, **{answer_parts.SENT: fb_id, answer_parts.SENDING_AT: None}
                )
            elif row.fb_id is None and await self.core.repo.messages.by_fb_id(s, fb_id) is None:
                row.fb_id = fb_id

    async def _keep_sending(self, message_id: int, part: int) -> None:
        """A file's send begins: if it ends without a clear answer, a retry looks for the
        file on Facebook (sent since then) before sending it again."""
        async with self.core.tx(durable=True) as s:
            row = await s.get(Message, message_id, with_for_update=True)
            assert row is not None
            row.media = answer_parts.with_part(
                row.media, part, **{answer_parts.SENDING_AT: time.time()}
            )

    async def _file_found(
        self, msg: Message, part: int, page_id: str, psid: str, token: str, task_id: int
    ) -> str | None:
        """The id of file ``part`` if an earlier send of it ended unclearly and Facebook
        stored it: the page's picture or file message to the person, sent since that send
        began, that is none of ours we know already. Kept at once when found."""
        began = answer_parts.sending_at(msg, part)
        if began is None:
            return None  # never sent, or its send's answer was clear
        graph = self.core.graph
        assert graph is not None
        since = datetime.fromtimestamp(began, UTC) - CLOCK_SLACK
        candidates = await graph.sent_attachments(page_id, psid, token, since=since)
        if not candidates:
            return None
        repo = self.core.repo
        async with self.core.db.read() as s:
            known = answer_parts.sent_file_ids(await repo.messenger.answers_with_files(s, task_id))
            for fb_id in candidates:
                if await repo.messages.by_fb_id(s, fb_id) is not None:
                    known.add(fb_id)
        found = next((c for c in candidates if c not in known), None)
        if found is not None:
            log.info("file found on Facebook, not sent again", extra={"message_id": msg.id})
            await self._keep(msg.id, part, found)
        return found

    async def _media_url(self, platform: str, file_id: str) -> str:
        if self.media is None:
            raise DeliveryError("pictures and files cannot be sent here", retryable=False)
        return await self.media.link(platform, file_id)

    async def private_reply(self, job: FbPrivateReply, row: OutboxJob) -> None:
        """``/dm``: the text goes to the commenter in Messenger. Facebook refuses a second
        one for the same comment, so an unclear failure is not sent again blindly: the
        thread says so instead."""
        repo = self.core.repo
        async with self.core.db.read() as s:
            msg, task, comment, page = await self._rows(s, job.message_id)
        if msg is None:
            return
        if task is None or comment is None or page is None or comment.fb_id is None:
            raise DeliveryError("the comment it answers is gone", retryable=False)
        if msg.state == MessageState.SENDING:
            raise DeliveryError(
                "it is unclear whether Facebook took the private reply, and it allows only "
                "one per comment: look in the Page's inbox",
                retryable=False,
            )
        graph = self.core.graph
        if graph is None:
            raise DeliveryError("Facebook is not configured", retryable=False)
        token = self.core.page_token(page)
        async with self.core.tx(durable=True) as s:
            sending = await repo.messages.get(s, msg.id)
            assert sending is not None
            sending.state = MessageState.SENDING
        psid, mid = await graph.private_reply(
            page.id, comment.fb_id, msg.text, token, metadata=routing.send_metadata(msg.id)
        )
        async with self.core.tx() as s:
            record = await repo.messenger.private_reply(s, comment.fb_id)
            if record is not None:
                record.psid = psid or None
        who = comment.author_name or "the commenter"
        note = (
            f"Answered {who}'s comment privately in Messenger. When they answer, the "
            "conversation continues in their Messenger task."
        )
        await self.delivered(task, msg.id, mid or None, notes=[note])

    async def delivered(
        self, task: Task, message_id: int, fb_id: str | None, *, notes: list[str] | None = None
    ) -> None:
        async with self.core.tx() as s:
            row = await self.core.repo.messages.get(s, message_id)
            assert row is not None
            if row.state == MessageState.DELIVERED:
                return
            clash = await self.core.repo.messages.by_fb_id(s, fb_id) if fb_id else None
            if fb_id and (clash is None or clash.id == row.id):
                row.fb_id = fb_id
            row.state = MessageState.DELIVERED
            row.error = None
            # queued even before the answer's chat copy exists (Slack's Reply modal): the
            # copy is queued earlier in the same lane, so it is there when this runs
            self.core.add_job(s, task, MarkDelivered(task.id, row.id))
            for note in notes or ():
                # which rule or channel an answer took, when it is not the plain one
                self.core.add_job(
                    s, task, NoticeInTask(task.id, note, reply_to=row.chat_message_id)
                )
        self.core.metrics.answers.labels("delivered").inc()
