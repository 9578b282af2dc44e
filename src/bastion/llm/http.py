"""The HTTP backend: any OpenAI-compatible chat-completions server.

llama.cpp's servers, vLLM, LM Studio, Ollama and OpenAI itself differ only by a
:class:`Quirks` profile (data, not subclasses): whether native tool calls are reliable, how a
JSON-schema constraint is spelled, whether streamed usage must be requested. Without native
tools, calls go through the same constrained choose/fill/answer protocol as the embedded
model, with the server's ``response_format`` doing the constraining.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import httpx

from bastion import telemetry
from bastion.crypto.pinning import transport_for
from bastion.errors import (
    ModelError,
    ModelHTTPError,
    ModelOutputError,
    ModelTimeout,
    ModelUnreachable,
)
from bastion.llm._constrained import DEFAULT_POLICY, Plain, Policy, constrained_chat
from bastion.llm._repair import loads_lenient
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolSpec,
    Usage,
)


@dataclass(frozen=True, slots=True)
class Quirks:
    """How one kind of server differs from plain OpenAI chat completions."""

    name: str
    default_base_url: str
    native_tools: bool  # server-side tool calling with tool_choice="auto" is reliable
    schema_format: Literal["json_schema", "json_object"]  # spelling of a schema constraint
    stream_usage: bool  # send stream_options.include_usage
    needs_key: bool = False


PROFILES: dict[str, Quirks] = {
    "openai": Quirks("openai", "https://api.openai.com/v1", True, "json_schema", True, True),
    # llama-cpp-python's server and llama.cpp's llama-server: auto tool choice depends on the
    # model's template (often ignored); both accept {"type": "json_object", "schema": ...}.
    "llamacpp": Quirks("llamacpp", "http://127.0.0.1:8080/v1", False, "json_object", False),
    "vllm": Quirks("vllm", "http://127.0.0.1:8000/v1", False, "json_schema", True),
    "lmstudio": Quirks("lmstudio", "http://127.0.0.1:1234/v1", False, "json_schema", True),
    "ollama": Quirks("ollama", "http://127.0.0.1:11434/v1", True, "json_schema", True),
}


def pick_profile(backend: str, base_url: str | None, profile: str | None = None) -> Quirks:
    """Return the quirks for a configured backend (explicit profile, else by backend/URL)."""
    if profile and profile != "auto":
        try:
            return PROFILES[profile]
        except KeyError as exc:
            raise ModelError(
                f"unknown server profile {profile!r}",
                fix=f"set model.profile to one of: auto, {', '.join(PROFILES)}",
            ) from exc
    if backend == "ollama":
        return PROFILES["ollama"]
    url = (base_url or "").lower()
    if not url or "api.openai.com" in url:
        return PROFILES["openai"]
    if ":11434" in url:
        return PROFILES["ollama"]
    if ":1234" in url:
        return PROFILES["lmstudio"]
    return PROFILES["llamacpp"]


def normalize_base_url(url: str) -> str:
    """Return ``url`` ending in ``/v1`` without a trailing slash."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


class HttpModel:
    """A :class:`bastion.llm.base.Model` served over OpenAI-compatible HTTP."""

    prefill = False  # chat servers cannot continue a partial assistant reply

    def __init__(
        self,
        model: str,
        *,
        quirks: Quirks,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 120.0,
        native_tools: bool | None = None,
        policy: Policy = DEFAULT_POLICY,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = model
        self.quirks = quirks if native_tools is None else replace(quirks, native_tools=native_tools)
        self.base_url = normalize_base_url(base_url or quirks.default_base_url)
        self.policy = policy
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            # a host pinned in crypto.tls_pins gets a transport that checks its key
            transport=transport if transport is not None else transport_for(self.base_url),
            event_hooks={"request": [telemetry.httpx_hook]},  # W3C traceparent, when tracing
        )

    # -- transport -------------------------------------------------------------------------
    def _url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _map_error(self, exc: Exception) -> ModelError:
        url = self._url()
        if isinstance(exc, httpx.ConnectError):
            return ModelUnreachable(
                f"cannot reach the model server at {url}",
                fix="start the server, or set model.base_url to where it listens",
            )
        if isinstance(exc, httpx.TimeoutException):
            return ModelTimeout(
                f"the model server at {url} did not answer in time",
                fix="raise model.timeout_s or use a smaller model",
            )
        if isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError)):  # cut mid-way
            return ModelUnreachable(
                f"request to the model server at {url} failed: {exc}",
                fix="check that the model server is still running (its log says why it closed)",
            )
        return ModelError(
            f"request to the model server at {url} failed: {exc}",
            fix="check model.base_url and that the server speaks the OpenAI API",
        )

    async def _status_error(self, resp: httpx.Response) -> ModelHTTPError:
        try:
            body = (await resp.aread()).decode("utf-8", "replace")
        except httpx.HTTPError:
            body = ""
        detail = body
        try:
            data = json.loads(body)
            err = data.get("error", data) if isinstance(data, dict) else data
            detail = err.get("message", body) if isinstance(err, dict) else str(err)
        except ValueError:
            pass
        detail = " ".join(str(detail).split())[:300]
        code = resp.status_code
        if code in (401, 403):
            fix = "set model.api_key (or BASTION_MODEL__API_KEY) to a valid key"
        elif code == 404 or "model" in detail.lower() and "not" in detail.lower():
            fix = f"check model.name against {self.base_url}/models and model.base_url"
        else:
            fix = "check model.base_url, model.name and model.profile"
        return ModelHTTPError(f"model server {self._url()} answered {code}: {detail}", fix=fix,
                              status_code=code, body=body[:2000])

    def _body(
        self, messages: list[dict[str, Any]], settings: ChatSettings, stream: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "stream": stream,
        }
        if settings.stop:
            body["stop"] = list(settings.stop)
        if settings.seed is not None:
            body["seed"] = settings.seed
        if stream and self.quirks.stream_usage:
            body["stream_options"] = {"include_usage": True}
        return body

    def _schema_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.quirks.schema_format == "json_object":
            return {"type": "json_object", "schema": schema}
        return {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema, "strict": True},
        }

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise self._map_error(exc) from exc
        if resp.status_code >= 400:
            raise await self._status_error(resp)
        try:
            data: dict[str, Any] = resp.json()
        except ValueError as exc:
            raise ModelError(
                f"the model server at {self._url()} sent a body that is not JSON",
                fix="check model.base_url points at an OpenAI-compatible API",
            ) from exc
        return data

    async def _sse(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._client.stream("POST", "/chat/completions", json=body) as resp:
                if resp.status_code >= 400:
                    raise await self._status_error(resp)
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        continue  # keep-alive comments or junk between events
                    if isinstance(chunk, dict):
                        if "error" in chunk and not chunk.get("choices"):
                            err = chunk["error"]
                            msg = err.get("message") if isinstance(err, dict) else str(err)
                            raise ModelError(
                                f"model server {self._url()} reported: {msg}",
                                fix="check model.name and the server log",
                            )
                        yield chunk
        except httpx.HTTPError as exc:
            raise self._map_error(exc) from exc

    # -- primitives for the constrained protocol -------------------------------------------
    async def complete(
        self, messages: Plain, *, schema: dict[str, Any] | None, max_tokens: int, prefix: str = ""
    ) -> tuple[str, Usage]:
        """Return one completion, constrained through ``response_format`` when ``schema``."""
        body = self._body(
            list(messages), ChatSettings(temperature=0.0, max_tokens=max_tokens), False
        )
        if schema is not None:
            body["response_format"] = self._schema_format(schema)
        data = await self._post(body)
        choices = data.get("choices") or [{}]
        text = str((choices[0].get("message") or {}).get("content") or "")
        return text, _usage(data.get("usage"))

    async def score(
        self, messages: Plain, prefix: str, options: Sequence[str]
    ) -> list[float] | None:
        """HTTP servers do not expose option scoring; the protocol generates instead."""
        return None

    async def stream(
        self, messages: Plain, settings: ChatSettings
    ) -> AsyncIterator[str | Usage | Finish]:
        """Stream a free-text reply over SSE."""
        reason = "stop"
        async for chunk in self._sse(self._body(list(messages), settings, True)):
            if chunk.get("usage"):
                yield _usage(chunk["usage"])
            for choice in chunk.get("choices") or []:
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece
                if choice.get("finish_reason"):
                    reason = choice["finish_reason"]
        yield Finish(reason)

    # -- the Model seam ---------------------------------------------------------------------
    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        """Stream a reply: native tool calls where the profile allows, else constrained."""
        settings = settings or ChatSettings()
        if tools and settings.tool_choice != "none" and not self.quirks.native_tools:
            async for ev in constrained_chat(self, messages, tools, settings, self.policy):
                yield ev
            return
        wire = [m.to_openai() for m in messages]
        body = self._body(wire, settings, True)
        if tools and settings.tool_choice != "none":
            body["tools"] = [t.to_openai() for t in tools]
            body["tool_choice"] = _tool_choice(settings.tool_choice, tools)
        known = {t.name for t in tools}
        for attempt in range(2):
            partial: dict[int, dict[str, str]] = {}
            reason = "stop"
            streamed = finished = False
            async for chunk in self._sse(body):
                if chunk.get("usage"):
                    yield _usage(chunk["usage"])
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        streamed = True
                        yield TextDelta(delta["content"])
                    for tc in delta.get("tool_calls") or []:
                        slot = partial.setdefault(
                            int(tc.get("index", 0)), {"name": "", "args": "", "id": ""}
                        )
                        fn = tc.get("function") or {}
                        slot["id"] = tc.get("id") or slot["id"]
                        slot["name"] += fn.get("name") or ""
                        slot["args"] += fn.get("arguments") or ""
                    if choice.get("finish_reason"):
                        reason, finished = choice["finish_reason"], True
            if not (streamed or partial or finished):  # not even an empty reply's finish
                if attempt == 0:
                    continue
                raise ModelOutputError(
                    f"the model server at {self._url()} ended its stream without a reply "
                    "(no text, no tool call, no finish reason)",
                    fix="check the server log; llama_cpp.server streams nothing for "
                    "chatml-function-calling with tools: set model.native_tools: false",
                )
            try:
                calls = [_parse_native(partial[i], known) for i in sorted(partial)]
            except ValueError as exc:
                if attempt == 0 and not streamed:
                    continue  # one retry of the whole request before giving up
                raise ModelOutputError(
                    f"the model's tool call could not be parsed: {exc}",
                    fix="retry, or set model.native_tools: false to use constrained decoding",
                ) from exc
            for c in calls:
                yield ToolCallEvent(c)
            yield Finish("tool_calls" if calls else reason)
            return

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _tool_choice(choice: str, tools: Sequence[ToolSpec]) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if any(t.name == choice for t in tools):
        return {"type": "function", "function": {"name": choice}}
    return "auto"


def _parse_native(slot: dict[str, str], known: set[str]) -> ToolCall:
    name = slot["name"].strip()
    if name not in known:
        raise ValueError(f"unknown tool {name!r}")
    raw = slot["args"].strip()
    args = loads_lenient(raw) if raw else {}
    if not isinstance(args, dict):
        raise ValueError(f"arguments of {name} are not a JSON object: {raw[:80]!r}")
    return ToolCall(name, args, id=slot["id"] or ToolCall(name, {}).id)


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage(0, 0)
    return Usage(int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0))
