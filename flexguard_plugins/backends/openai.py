"""OpenAI-compatible HTTP backend (`vllm serve` and alike) over `/v1/completions`.

The prompt is rendered here, on the client, with the model's tokenizer: the think prefill then works
on any server, and the server's prefix cache sees the same system prompt text every time. One request
per item, spread over one or several servers, at most `concurrency` in flight.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..prompts import THINK_CLOSE, THINK_OPEN
from ..types import ModerationItem, RiskScore
from . import generation as gen
from .base import Backend

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
logger = logging.getLogger(__name__)


class OpenAIBackend(Backend):
    """FlexGuard on remote OpenAI-compatible completion servers.

    `base_url`: one URL or a list (e.g. `http://gpu-a:8000/v1`); requests rotate over them. A connection
    that is refused or not made within `connect_timeout` seconds (a black-holed host) fails over to the
    next URL at once. Read timeouts (`timeout`), 429 and 5xx are retried up to `max_retries` times with
    exponential backoff (`backoff` · 2^attempt seconds); no concurrency slot is held while backing off.
    Each item has one `deadline` (seconds) over all its attempts and waits. A request that still fails
    gives that item, and only it, `ok=False` with the reason (timeout, connection refused, HTTP status).
    The prompt is sent as rendered (`add_special_tokens: false`: the template holds the BOS) and the answer
    comes back with its special tokens (`skip_special_tokens: false`), of which only the think tags are
    kept, as the local backends decode. `api_key` is sent as a bearer token and never shown by
    `describe()` or `repr()`. `languages`: the languages the model is accepted for (`generation.language_gate`;
    default any); `max_judged_chars`: the longest judged text it was measured on (default no limit).
    """

    name = "openai"

    def __init__(self, model: str | Path, *, base_url: str | Sequence[str], api_key: str | None = None,
                 reasoning: bool = True, max_new_tokens: int | None = None,
                 system_prompt_path: str | Path | None = None, expected_score: bool = True,
                 languages: Sequence[str] | None = None, max_judged_chars: int | None = None,
                 tokenizer: str | Path | None = None, served_model_name: str | None = None,
                 max_model_len: int | None = None, timeout: float = 60.0, connect_timeout: float = 3.0,
                 deadline: float = 120.0, max_retries: int = 2, backoff: float = 0.5,
                 concurrency: int = 32, batch_size: int = 64, http_client: Any = None) -> None:
        import httpx

        if model is None:
            raise ValueError("the openai backend needs a model name (the one the server serves)")
        urls = [base_url] if isinstance(base_url, str) else list(base_url or [])
        if not urls:
            raise ValueError("the openai backend needs base_url: one URL or a list, e.g. http://host:8000/v1")
        for url in urls:
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"base_url {url!r} must be an http(s) URL")
        if min(timeout, connect_timeout, deadline) <= 0 or max_retries < 0 or concurrency < 1 or batch_size < 1:
            raise ValueError("timeout, connect_timeout and deadline must be > 0, max_retries ≥ 0, "
                             "concurrency and batch_size ≥ 1")
        self.options = gen.generation_options(reasoning, max_new_tokens, system_prompt_path, expected_score)
        self.gate = gen.language_gate(languages)
        self.max_judged_chars = gen.judged_chars_limit(max_judged_chars)
        self.model_name = str(model)
        self.served_model_name = served_model_name or self.model_name
        self.base_urls = [url.rstrip("/") for url in urls]
        self.tokenizer = gen.load_tokenizer(tokenizer or model)
        context = max_model_len or _config_context(tokenizer or model)
        self.max_content_tokens = None if context is None else gen.content_budget(self.tokenizer, context, self.options)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.deadline = float(deadline)
        self.max_retries = int(max_retries)
        self.backoff = float(backoff)
        self.concurrency = int(concurrency)
        self.max_batch_size = batch_size
        self.max_concurrent_batches = max(1, self.concurrency // batch_size) + 1
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_client = http_client is None
        self._client = http_client if http_client is not None else httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout))
        self._special_texts = tuple(t for t in getattr(self.tokenizer, "all_special_tokens", ())
                                    if t not in (THINK_OPEN, THINK_CLOSE))
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None
        self._rotation = itertools.count()

    async def score_batch(self, items: Sequence[ModerationItem]) -> list[RiskScore]:
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:  # a semaphore belongs to one event loop
            self._slots, self._slots_loop = asyncio.Semaphore(self.concurrency), loop
        return list(await asyncio.gather(*(self._score_one(item) for item in items)))

    async def _score_one(self, item: ModerationItem) -> RiskScore:
        """One request; whatever goes wrong with it (rendering included) fails this item alone."""
        try:
            body: dict[str, Any] = {
                "model": self.served_model_name,
                "prompt": gen.prompt_text(self.tokenizer, item, self.options),
                "max_tokens": self.options.max_new_tokens,
                "temperature": 0.0,
                "add_special_tokens": False,
                "skip_special_tokens": False,
            }
            if self.options.expected_score:
                body["logprobs"] = gen.TOP_LOGPROBS
            return await self._post_with_retries(body)
        except Exception as error:  # noqa: BLE001 - this item's failure, with its reason
            return RiskScore.failure(f"could not judge this item: {type(error).__name__}: {error}", scorer=self.name)

    async def _post_with_retries(self, body: dict[str, Any]) -> RiskScore:
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.deadline
        start = next(self._rotation)
        order = [self.base_urls[(start + k) % len(self.base_urls)] for k in range(len(self.base_urls))]
        attempt, refused_in_row, k, tries = 0, 0, 0, 0
        reason = f"no attempt within the deadline of {self.deadline:g} s"
        while True:
            left = ends - loop.time()
            if left <= 0:
                return RiskScore.failure(f"{reason} (deadline of {self.deadline:g} s reached after {_tries(tries)})",
                                         scorer=self.name)
            url = order[k % len(order)]
            k += 1
            assert self._slots is not None
            async with self._slots:  # held for the request only, never while backing off
                kind, payload = await self._post(url, body, left)
            tries += 1
            if kind == "ok":
                return self._to_risk(payload, url)
            if kind == "fatal":
                return RiskScore.failure(payload, scorer=self.name)
            reason = payload
            if kind == "refused" and refused_in_row + 1 < len(order):
                refused_in_row += 1  # fail over to the next server at once
                logger.warning("openai backend: %s; failing over to %s", _headline(payload), order[k % len(order)])
                continue
            refused_in_row = 0
            if attempt >= self.max_retries:
                logger.warning("openai backend: %s; giving up after %s", _headline(payload), _tries(tries))
                return RiskScore.failure(f"{payload} (gave up after {_tries(tries)})", scorer=self.name)
            wait = self.backoff * 2 ** attempt
            if wait >= ends - loop.time():
                logger.warning("openai backend: %s; deadline of %g s reached", _headline(payload), self.deadline)
                return RiskScore.failure(f"{payload} (deadline of {self.deadline:g} s reached after {_tries(tries)})",
                                         scorer=self.name)
            logger.info("openai backend: %s; retry %d of %d in %g s", _headline(payload), attempt + 1,
                        self.max_retries, wait)
            await asyncio.sleep(wait)
            attempt += 1

    async def _post(self, url: str, body: dict[str, Any], left: float) -> tuple[str, Any]:
        """("ok", json) | ("refused" | "retry" | "fatal", reason). `left`: seconds to the item's deadline."""
        import httpx

        read = min(self.timeout, left)
        timeout = httpx.Timeout(read, connect=min(self.connect_timeout, left))
        try:
            response = await self._client.post(f"{url}/completions", json=body, headers=self._headers,
                                               timeout=timeout)
        except httpx.ConnectTimeout:
            return "refused", f"no connection to {url} within {min(self.connect_timeout, left):g} s (connect timeout)"
        except httpx.TimeoutException as error:
            return "retry", f"timeout after {read:g} s waiting for {url} ({type(error).__name__})"
        except httpx.ConnectError as error:
            return "refused", f"connection refused or unreachable: {url} ({error or type(error).__name__})"
        except httpx.HTTPError as error:
            return "retry", f"connection error with {url}: {type(error).__name__}: {error}"
        if response.status_code != 200:
            reason = f"HTTP {response.status_code} from {url}: {response.text[:200]}"
            return ("retry" if response.status_code in _RETRY_STATUS else "fatal"), reason
        try:
            return "ok", response.json()
        except ValueError:
            return "fatal", f"malformed JSON from {url}: {response.text[:200]}"

    def _to_risk(self, payload: Any, url: str) -> RiskScore:
        try:
            choice = payload["choices"][0]
            text = choice["text"]
            logprobs = choice.get("logprobs") or {}
            tokens = logprobs.get("tokens") or []
            tops = logprobs.get("top_logprobs") or []
        except (KeyError, IndexError, TypeError, AttributeError):
            return RiskScore.failure(f"unexpected completion response from {url}: {str(payload)[:200]}",
                                     scorer=self.name)
        if not isinstance(text, str):
            return RiskScore.failure(f"completion text from {url} is not a string", scorer=self.name)
        for special in self._special_texts:  # EOS, padding: dropped, as the local backends' decode does
            text = text.replace(special, "")
        pairs = [(token, dict(top or {})) for token, top in zip(tokens, tops, strict=False)]
        token_logprobs = gen.drop_special_texts(self.tokenizer, pairs)
        return gen.to_risk(text, self.options, self.name, token_logprobs)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.served_model_name, "base_url": list(self.base_urls),
                "reasoning": self.options.reasoning, **self.measured_range()}

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.served_model_name!r}, base_url={self.base_urls!r})"


def _headline(reason: str) -> str:
    """A failure reason for the log, without the server's answer body (it may quote the judged text)."""
    return reason.split(": ", 1)[0] if reason.startswith("HTTP ") else reason


def _tries(n: int) -> str:
    return "1 attempt" if n == 1 else f"{n} attempts"


def _config_context(name_or_path: str | Path) -> int | None:
    """The model's context length from its config, when the tokenizer folder has one."""
    try:
        from transformers import AutoConfig

        return getattr(AutoConfig.from_pretrained(str(name_or_path)), "max_position_embeddings", None)
    except (OSError, ValueError):
        return None
