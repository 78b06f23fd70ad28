"""Release of a streamed output: chunks are held back until a check of the reply so far has passed them.

Each time `chunk_size` characters of new text are waiting, the value so far (the reply, with its question
when the stream carries one) is judged as `invoke` would judge it, when the next chunk arrives; if it passes,
the waiting chunks go out. A window is never judged alone, so a few words are never read out of context,
and an LLM backend with a prefix cache (vLLM, the transformers backend) computes only the new text: the
stream's total guard cost grows with the message, not with windows times window.
A re-check that flags the reply so far holds the rest of the stream back instead of stopping it: a beginning can
read as harm until the reply goes on (a plot summary's murder before "the novel follows his guilt"). No later
re-check can release it (padding after the harm must not buy a pass): the whole-text check at the end decides,
so a stream ends as `invoke` on the whole text would, and nothing a check flagged is shown unless the whole passed.
At the end the whole text is judged the same way, and only then does the tail go out, so text that is
harmful only as a whole is still stopped before its last part.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from ._decisions import FlexGuardViolation
from ._items import message_text, reply_text


def _text(total: Any) -> str | None:
    """The streamed text so far, or None for a stream that cannot be read part by part (buffered)."""
    if isinstance(total, str):
        return total
    if isinstance(total, AIMessage):
        return reply_text(total)
    if isinstance(total, BaseMessage):
        return message_text(total)
    if isinstance(total, Mapping) and isinstance(total.get("response"), (str, BaseMessage)):
        response = total["response"]
        return reply_text(response) if isinstance(response, AIMessage) else message_text(response)
    return None


class WindowedRelease:
    """The state of one stream; the sync and async transforms drive it the same way."""

    def __init__(self, chunk_size: int) -> None:
        self.chunk_size = chunk_size
        self.total: Any = None
        self.pending: list[Any] = []
        self.checked_chars = 0
        self.held = False
        """A re-check flagged the text: everything waits for the whole-text check."""

    def push(self, chunk: Any) -> Any | None:
        """Take a chunk; return the value so far, to judge, when `chunk_size` new characters are waiting."""
        if self.total is None:
            self.total = chunk
        else:
            try:
                self.total = self.total + chunk
            except TypeError:
                self.total = chunk  # as LangChain's own transform: a value that cannot be added replaces
        self.pending.append(chunk)
        text = _text(self.total)
        if self.held or text is None or len(text) - self.checked_chars < self.chunk_size:
            return None
        if isinstance(self.total, Mapping) and "prompt" not in self.total:
            return None  # `with_prompt`'s branches race: the reply waits for its question
        self.checked_chars = len(text)
        return self.total

    def release(self, passed: bool) -> list[Any]:
        """The waiting chunks if the check of the value so far `passed`; if it flagged it, none, now or on any
        later re-check (the stream is held for the whole-text check)."""
        self.held = self.held or not passed
        if self.held:
            return []
        return self.release_all()

    def release_all(self) -> list[Any]:
        """Every waiting chunk: the whole text passed."""
        chunks, self.pending = self.pending, []
        return chunks


def _flag_to_hold(flag: FlexGuardViolation) -> bool:
    """False for a re-check that flagged the text (hold it back); a text the guard could not judge stops the
    stream at once, as `on_error` says."""
    if flag.decision.failed:
        raise flag
    return False


def released(chunks: Iterator[Any], stream: WindowedRelease, judge: Callable[[Any], Any],
             windowed: bool) -> Iterator[Any]:
    """The chunks, each out after a check of the value so far passed it (`judge`, which raises on a flag, when a
    window is full and the next chunk arrives; a flag holds the text back), the tail after the whole value passed
    (a one-chunk stream is judged once, whole). Not `windowed`: the stream is buffered, judged once, and
    `judge`'s answer goes out."""
    due = None
    for chunk in chunks:
        if due is not None:
            try:
                judge(due)
                passed = True
            except FlexGuardViolation as flag:
                passed = _flag_to_hold(flag)
            yield from stream.release(passed)
        window = stream.push(chunk)
        due = window if windowed else None
    if stream.total is not None:
        out = judge(stream.total)
        yield from (stream.release_all() if windowed else [out])


async def areleased(chunks: AsyncIterator[Any], stream: WindowedRelease, judge: Callable[[Any], Awaitable[Any]],
                    windowed: bool) -> AsyncIterator[Any]:
    due = None
    async for chunk in chunks:
        if due is not None:
            try:
                await judge(due)
                passed = True
            except FlexGuardViolation as flag:
                passed = _flag_to_hold(flag)
            for ready in stream.release(passed):
                yield ready
        window = stream.push(chunk)
        due = window if windowed else None
    if stream.total is not None:
        out = await judge(stream.total)
        for ready in stream.release_all() if windowed else [out]:
            yield ready
