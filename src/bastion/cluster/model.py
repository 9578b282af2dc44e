"""The cluster as a :class:`~bastion.llm.base.Model`: route, retry, fail over, mid-stream too.

One client request becomes one or more *attempts*, each on one node:

* before anything was shown, a failed attempt is restarted on the next node transparently;
* after text was streamed, the next node continues the same answer: ``replay`` regenerates
  it with the same settings (greedy or a fixed seed, so the same model reproduces it), the
  router checks that the regenerated text starts with what the client already saw and
  streams only the rest; ``prefill`` sends the partial answer as a trailing assistant
  message for the node to continue. ``auto`` uses prefill for engines that continue a
  trailing assistant message (Ollama) and replay elsewhere, falling back to prefill
  when a replay diverges;
* tool calls and usage are held until the attempt that produced them finished cleanly, so
  a cut stream can never hand the agent a tool call twice (the agent runs tools only after
  the model call returned, and it receives exactly one attempt's calls).

A failed node is demoted at once (breaker + ranking), the retry goes to another node
without delay; a jittered exponential backoff is only paid when a whole round of candidates
failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from bastion import telemetry
from bastion.cluster._errors import Diverged, NodeFailed, classify_failure
from bastion.cluster.breaker import BreakerState
from bastion.cluster.classifier import Classification, classify
from bastion.cluster.metrics import ClusterMetrics
from bastion.cluster.node import Node, NodeSpec, Tier
from bastion.cluster.retry import Backoff
from bastion.cluster.router import Router
from bastion.cluster.service import ClusterService
from bastion.config.model import ClusterConfig
from bastion.errors import ClusterError, ModelOutputError
from bastion.llm.base import Model, WrapperModel
from bastion.messages import (
    ChatSettings,
    Finish,
    Message,
    ModelEvent,
    TextDelta,
    ToolSpec,
    Usage,
)

FailoverMode = Literal["auto", "replay", "prefill"]
ModelFactory = Callable[[NodeSpec, str], Model]
# Engines that continue a trailing assistant message as-is. vLLM can too, but only with
# ``continue_final_message``/``add_generation_prompt: false`` in the body, which the shared
# HTTP client does not send, so vLLM nodes replay (and prefill only if a replay diverges).
_PREFILL_ENGINES = frozenset({"ollama"})
DISCOVERY_GRACE_S = 3.0


@dataclass(slots=True)
class CallPolicy:
    """Timeouts, attempts and backoff for calls to nodes."""

    max_attempts: int = 4
    queue_timeout_s: float = 10.0
    backoff_base_s: float = 0.1
    backoff_max_s: float = 2.0
    first_token_timeout_s: float = 60.0
    idle_timeout_s: float = 30.0
    failover: FailoverMode = "auto"

    @classmethod
    def from_config(cls, cfg: ClusterConfig) -> CallPolicy:
        """Build from the ``cluster`` config section."""
        return cls(
            max_attempts=cfg.max_attempts,
            queue_timeout_s=cfg.queue_timeout_s,
            backoff_base_s=cfg.backoff_base_s,
            backoff_max_s=cfg.backoff_max_s,
            first_token_timeout_s=cfg.first_token_timeout_s,
            idle_timeout_s=cfg.idle_timeout_s,
            failover=cfg.failover,
        )


@dataclass(slots=True)
class RouteRecord:
    """How one client request was served (for status, tests and debugging)."""

    tier: Tier
    classification: Classification | None
    nodes: list[str]
    failovers: int = 0
    mode: str = "direct"
    ok: bool = False
    error: str = ""


@dataclass(slots=True)
class _Progress:
    shown: str = ""  # text already streamed to the client
    mode: str = "restart"


async def _next(it: AsyncIterator[ModelEvent], timeout: float) -> ModelEvent:
    async with asyncio.timeout(timeout):
        return await it.__anext__()


class ClusterModel:
    """A :class:`Model` that spreads requests over nodes and survives losing them."""

    def __init__(
        self,
        router: Router,
        model_factory: ModelFactory,
        *,
        model_name: str,
        tier: Literal["auto", "small", "medium", "large"] = "auto",
        policy: CallPolicy | None = None,
        services: Sequence[ClusterService] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.name = f"cluster:{model_name}"
        self.model_name = model_name
        self.router = router
        self.metrics: ClusterMetrics = router.metrics
        self.tier = tier
        self.policy = policy or CallPolicy()
        self._factory = model_factory
        self._models: dict[str, Model] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._services = list(services)
        self._started = False
        self._grace_until = 0.0
        self._rng = rng or random.Random()
        self._backoff = Backoff(self.policy.backoff_base_s, self.policy.backoff_max_s, self._rng)
        self.history: list[RouteRecord] = []
        router.listeners.append(self._on_membership)

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start background services (health monitor, discovery); idempotent."""
        if self._started:
            return
        self._started = True
        for svc in self._services:
            await svc.start()
            if svc.discovers:  # give mDNS a moment to find nodes before the first request
                self._grace_until = time.monotonic() + DISCOVERY_GRACE_S

    async def aclose(self) -> None:
        """Stop services and close every per-node client."""
        for svc in reversed(self._services):
            await svc.stop()
        self._started = False
        models, self._models = list(self._models.values()), {}
        for m in models:
            await m.aclose()

    def node_model(self, node: Node) -> Model:
        """Return the client used to talk to ``node`` (created on first use)."""
        m = self._models.get(node.name)
        if m is None:
            m = self._models[node.name] = self._factory(node.spec, self.model_name)
        return m

    def _on_membership(self, what: str, node: Node) -> None:
        if what in ("removed", "updated"):  # a new URL or token needs a new client
            m = self._models.pop(node.name, None)
            if m is None:
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop: nothing was opened from this thread
                return
            task = loop.create_task(m.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    # ---- the Model seam -----------------------------------------------------------------
    async def chat(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec] = (),
        *,
        settings: ChatSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        """Stream an answer from the best node, failing over across nodes when needed."""
        if not self._started:
            await self.start()
        settings = settings or ChatSettings()
        if settings.seed is None:
            # one seed for every attempt of this request: a replay reproduces sampled text too
            settings = replace(settings, stop=list(settings.stop), seed=self._rng.randrange(2**31))
        cls: Classification | None = None
        if self.tier == "auto":
            cls = classify(messages, tools)
            tier: Tier = cls.tier
            prompt_tokens = cls.prompt_tokens
        else:
            tier = self.tier
            from bastion.cluster.classifier import estimate_prompt_tokens

            prompt_tokens = estimate_prompt_tokens(messages, tools)
        need = prompt_tokens + settings.max_tokens
        while not self.router.nodes and time.monotonic() < self._grace_until:
            await asyncio.sleep(0.05)  # just started with discovery: nodes are arriving
        if not any(True for _ in self.router.eligible(self.model_name, need)):
            need = prompt_tokens + 16  # a node may still answer with a shorter completion
            if not any(True for _ in self.router.eligible(self.model_name, need)):
                self.metrics.routed.inc(tier=tier, outcome="no_node")
                raise ClusterError(
                    f"no node serves model {self.model_name} with a context of {need} tokens",
                    fix="add a node: bastion cluster add NAME URL --model "
                    f"{self.model_name} --max-context {need}",
                )
        record = RouteRecord(tier, cls, [])
        self.history.append(record)
        del self.history[:-200]
        progress = _Progress()
        tried: set[str] = set()
        attempts = rounds = 0
        last = "no node was available"
        waited_since: float | None = None
        while attempts < self.policy.max_attempts:
            node = self.router.pick(tier, self.model_name, need, tried)
            if node is None:
                # every candidate of this round failed or is cooling down: back off and start
                # a new round, for at most queue_timeout_s without a usable node
                now = time.monotonic()
                waited_since = waited_since or now
                left = self.policy.queue_timeout_s - (now - waited_since)
                if left <= 0 or self._soonest_usable(need) > left:
                    break  # nothing can become usable in time: fail now, clearly
                tried.clear()
                await asyncio.sleep(self._wait_for_any(rounds))
                rounds += 1
                continue
            waited_since = None
            attempts += 1
            tried.add(node.name)
            record.nodes.append(node.name)
            span = telemetry.start(f"cluster.attempt {node.name}", {
                "bastion.cluster.node": node.name, "bastion.cluster.attempt": attempts,
                "bastion.cluster.tier": tier, "bastion.cluster.mode": progress.mode})
            try:
                attempt = self._attempt(node, messages, tools, settings, progress)
                async with contextlib.aclosing(attempt):
                    async for ev in telemetry.within(span, attempt):
                        yield ev
            except NodeFailed as failure:
                last = f"{node.name}: {failure.reason}"
                span.set("bastion.cluster.failover_reason", failure.reason)
                span.set("bastion.cluster.failure_kind", str(failure.kind))
                span.fail(last)
                record.failovers += 1
                progress.mode = self._mode_after_failure(node, progress)
                self.metrics.failovers.inc(mode=progress.mode)
                continue
            except Diverged:
                last = f"{node.name}: replay diverged"
                span.set("bastion.cluster.failover_reason", "replay diverged")
                span.fail(last)
                progress.mode = "prefill"
                tried.discard(node.name)  # not the node's fault: it may continue the answer
                self.metrics.failovers.inc(mode="prefill")
                continue
            except BaseException as exc:
                record.error = str(exc)[:200]
                self.metrics.routed.inc(tier=tier, outcome="error")
                raise
            finally:
                span.end()
            record.ok = True
            record.mode = progress.mode if record.failovers else "direct"
            self.metrics.routed.inc(tier=tier, outcome="ok")
            return
        record.error = last
        self.metrics.routed.inc(tier=tier, outcome="failed")
        if not attempts:
            raise ClusterError(
                f"no node is available for model {self.model_name}: every one that serves it "
                "is down, draining or cooling down after failures",
                fix="check the nodes with: bastion cluster status",
            )
        raise ClusterError(
            f"every node failed this request after {attempts} attempts (last: {last})",
            fix="check the nodes with: bastion cluster status",
        )

    def _soonest_usable(self, need: int) -> float:
        """Seconds until some eligible node may take traffic (inf when none ever can)."""
        soonest = float("inf")
        for n in self.router.eligible(self.model_name, need):
            if n.draining:
                continue
            state = n.breaker.state
            soonest = min(soonest, n.breaker.retry_in() if state is BreakerState.OPEN else 0.0)
        return soonest

    def _wait_for_any(self, round_no: int) -> float:
        delay = self._backoff.delay(round_no)
        open_waits = [
            n.breaker.retry_in()
            for n in self.router.nodes.values()
            if n.breaker.state is BreakerState.OPEN and not n.draining
        ]
        if open_waits and not any(n.usable() for n in self.router.nodes.values()):
            # everything is cooling down: wait for the first breaker to allow a probe
            delay = max(delay, min(min(open_waits), self.policy.backoff_max_s))
        return delay

    def _mode_after_failure(self, node: Node, progress: _Progress) -> str:
        if not progress.shown:
            return "restart"
        mode = self.policy.failover
        if mode == "auto":
            # the *next* node decides; prefill when most engines continue a trailing message
            return "replay"
        return mode

    # ---- one attempt on one node --------------------------------------------------------
    async def _attempt(
        self,
        node: Node,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        settings: ChatSettings,
        progress: _Progress,
    ) -> AsyncGenerator[ModelEvent, None]:
        metrics = self.metrics
        name = node.name
        shown_before = progress.shown
        mode = progress.mode
        if shown_before and mode == "replay" and self.policy.failover == "auto":
            mode = "prefill" if node.spec.engine in _PREFILL_ENGINES else "replay"
        if shown_before:
            progress.mode = mode
        send: Sequence[Message] = messages
        skip = ""
        if shown_before and mode == "prefill":
            send = [*messages, Message("assistant", shown_before)]
        elif shown_before:
            skip = shown_before
        replayed = ""
        held: list[ModelEvent] = []
        finish: Finish | None = None
        completion = 0
        t0 = time.perf_counter()
        first_at: float | None = None
        verdict = False
        node.in_flight += 1
        metrics.in_flight.set(node.in_flight, node=name)
        it = self.node_model(node).chat(send, tools, settings=settings).__aiter__()
        try:
            timeout = self.policy.first_token_timeout_s
            while True:
                try:
                    ev = await _next(it, timeout)
                except StopAsyncIteration:
                    break
                except (ModelOutputError, asyncio.CancelledError):
                    raise
                except Exception as exc:  # mapped below; the breaker needs every kind
                    raise classify_failure(exc) from exc
                if first_at is None:
                    first_at = time.perf_counter()
                    metrics.first_token.observe(first_at - t0, node=name)
                    timeout = self.policy.idle_timeout_s
                if isinstance(ev, TextDelta):
                    completion += 1
                    if skip:
                        replayed += ev.text
                        if len(replayed) <= len(skip):
                            if not skip.startswith(replayed):
                                raise Diverged()
                            continue
                        if not replayed.startswith(skip):
                            raise Diverged()
                        ev = TextDelta(replayed[len(skip) :])
                        skip = ""
                    progress.shown += ev.text
                    yield ev
                elif isinstance(ev, Finish):
                    finish = ev
                else:
                    held.append(ev)
            if finish is None:
                raise NodeFailed("hard", "stream ended without a finish")
            if finish.reason == "error":
                raise NodeFailed("soft", "node reported an error")
            if skip and replayed != skip:  # finished before reproducing what was shown
                raise Diverged()
            verdict = True
            node.breaker.record_success()
            node.last_error = ""
            node.served += 1
            elapsed = time.perf_counter() - t0
            node.latencies.append(elapsed)
            metrics.latency.observe(elapsed, node=name)
            metrics.requests.inc(node=name, outcome="ok")
            prompt = 0
            for held_ev in held:
                if isinstance(held_ev, Usage):
                    prompt = held_ev.prompt_tokens
                    completion = held_ev.completion_tokens or completion
            metrics.tokens.inc(prompt, node=name, direction="prompt")
            metrics.tokens.inc(completion, node=name, direction="completion")
            if first_at is not None:
                node.record_speed(completion, time.perf_counter() - first_at)
        except NodeFailed as failure:
            verdict = True
            self._record_failure(node, failure, time.perf_counter() - t0)
            if failure.kind == "client" and not progress.shown:
                raise ClusterError(
                    f"node {name} refused the request: {failure.reason}",
                    fix="check the model name and context size of the request",
                ) from failure
            raise
        except Diverged:
            verdict = True
            metrics.requests.inc(node=name, outcome="diverged")
            raise
        except ModelOutputError:
            verdict = True
            node.breaker.record_success()  # the node works; its output did not parse
            metrics.requests.inc(node=name, outcome="bad_output")
            raise
        finally:
            node.in_flight -= 1
            metrics.in_flight.set(node.in_flight, node=name)
            if not verdict:  # cancelled by the client: no verdict on the node
                node.breaker.end_probe()
                metrics.requests.inc(node=name, outcome="cancelled")
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):  # the node is being given up on anyway
                    await aclose()
        for held_ev in held:
            yield held_ev
        yield finish

    def _record_failure(self, node: Node, failure: NodeFailed, elapsed: float) -> None:
        name = node.name
        self.metrics.errors.inc(node=name, kind=failure.kind)
        self.metrics.requests.inc(node=name, outcome="error")
        self.metrics.latency.observe(elapsed, node=name)
        node.last_error = failure.reason
        if failure.kind != "client":
            node.breaker.record_failure(hard=failure.kind == "hard")
            if failure.kind == "hard":
                node.healthy = False
        else:
            node.breaker.end_probe()

    # ---- management (CLI/API) -------------------------------------------------------------
    async def check_now(self) -> None:
        """Run one health round now (starting the services if needed)."""
        await self.start()
        for svc in self._services:
            await svc.check_now()

    def status(self) -> dict[str, object]:
        """Cluster-wide status: nodes plus routing counters."""
        return {
            "model": self.model_name,
            "tier": self.tier,
            "nodes": self.router.status(),
            "services": [svc.describe() for svc in self._services],
        }


def find_cluster(model: object, _depth: int = 0) -> ClusterModel | None:
    """Return the :class:`ClusterModel` behind ``model`` (it may be wrapped, e.g. by privacy)."""
    if isinstance(model, ClusterModel):
        return model
    if _depth > 4 or not isinstance(model, WrapperModel):
        return None
    for inner in model.wrapped:
        found = find_cluster(inner, _depth + 1)
        if found is not None:
            return found
    return None
