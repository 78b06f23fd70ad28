"""Windowed release of a streamed output: chunks are held back until the window they end has been judged.

As NeMo's streaming output rails: once `chunk_size` characters of new text are waiting, the window (those
characters plus `context_size` characters already released before them) is judged when the next chunk
arrives; if it passes, its chunks go out.
At the end the whole text is judged as `invoke` would judge it, and only then does the tail go out, so
text that is harmful only as a whole is still stopped before its last window.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage

from flexguard_plugins import ModerationItem

from ._items import message_text, reply_text, to_item


def _text(total: Any) -> str | None:
    """The streamed text so far, or None for a stream that cannot be read window by window (buffered)."""
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


def _window_item(total: Any, window: str) -> ModerationItem:
    """A window judged the way the whole value would be: a reply with its prompt, or text on its own."""
    if isinstance(total, AIMessage):
        return ModerationItem.coerce({"prompt": "", "response": window})
    if isinstance(total, Mapping):
        prompt = total.get("prompt")
        return ModerationItem.coerce({"prompt": prompt if isinstance(prompt, str) else "", "response": window})
    return ModerationItem.coerce(window)


class WindowedRelease:
    """The state of one stream; the sync and async transforms drive it the same way."""

    def __init__(self, chunk_size: int, context_size: int) -> None:
        self.chunk_size, self.context_size = chunk_size, context_size
        self.total: Any = None
        self.pending: list[Any] = []
        self.released_chars = 0

    def push(self, chunk: Any) -> ModerationItem | None:
        """Take a chunk; return the window to judge when `chunk_size` new characters are waiting."""
        if self.total is None:
            self.total = chunk
        else:
            try:
                self.total = self.total + chunk
            except TypeError:
                self.total = chunk  # as LangChain's own transform: a value that cannot be added replaces
        self.pending.append(chunk)
        text = _text(self.total)
        if text is None or len(text) - self.released_chars < self.chunk_size:
            return None
        return _window_item(self.total, text[max(0, self.released_chars - self.context_size):])

    def release(self) -> list[Any]:
        """The held chunks, now judged; they may go out."""
        chunks, self.pending = self.pending, []
        self.released_chars = len(_text(self.total) or "")
        return chunks

    def whole(self) -> ModerationItem | None:
        """The whole streamed value, judged as `invoke` judges it (None for an empty stream)."""
        return None if self.total is None else to_item(self.total)



def released(chunks: Iterator[Any], stream: WindowedRelease, judge: Callable[[Any], Any],
             windowed: bool) -> Iterator[Any]:
    """The chunks, each full window judged (`judge` raises on a flag) when the next chunk arrives, the tail after the
    whole value passed (a one-chunk stream is judged once, whole). Not `windowed`: the stream is buffered, judged
    once, and `judge`'s answer goes out."""
    due = None
    for chunk in chunks:
        if due is not None:
            judge(due)
            yield from stream.release()
        window = stream.push(chunk)
        due = window if windowed else None
    if stream.total is not None:
        out = judge(stream.total)
        yield from (stream.release() if windowed else [out])


async def areleased(chunks: AsyncIterator[Any], stream: WindowedRelease, judge: Callable[[Any], Awaitable[Any]],
                    windowed: bool) -> AsyncIterator[Any]:
    due = None
    async for chunk in chunks:
        if due is not None:
            await judge(due)
            for ready in stream.release():
                yield ready
        window = stream.push(chunk)
        due = window if windowed else None
    if stream.total is not None:
        out = await judge(stream.total)
        for ready in stream.release() if windowed else [out]:
            yield ready
