"""The agent uses the browser tools: scripted model + real chromium, and the shipped model."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bastion.agent.events import ToolFinished, ToolStarted, TurnDone
from bastion.agent.loop import Agent, AgentOptions
from bastion.messages import ChatSettings
from bastion.testing import ScriptedModel, call, say
from tests.integration.browser.conftest import BrowserEnv
from tests.integration.browser.site import PASSWORD, USER

pytestmark = pytest.mark.asyncio(loop_scope="session")
BROWSER_TOOLS = ["browser_navigate", "browser_read", "browser_click", "browser_type",
                 "browser_screenshot", "browser_close_session"]


async def test_agent_reads_a_logged_in_page_and_never_sees_the_credentials(
        env: BrowserEnv) -> None:
    model = ScriptedModel(call("browser_navigate", url=f"{env.site.auth_url}/account"),
                          say("You have 42 credits."))
    agent = Agent(model, env.app.gateway, AgentOptions(system_prompt="You browse.",
                                                       tools=BROWSER_TOOLS))
    events = [e async for e in agent.run("How many credits do I have?", session_id="agent-1")]
    finished = [e.result for e in events if isinstance(e, ToolFinished)]
    assert finished and finished[0].ok and "Balance: 42 credits" in finished[0].text
    assert isinstance(events[-1], TurnDone)
    seen = "\n".join(m.content for c in model.seen for m in c.messages)
    assert "Balance: 42 credits" in seen  # the page reached the model ...
    assert PASSWORD not in seen and "Sign in" not in seen  # ... the login never did
    assert {t.name for t in model.seen[0].tools} == set(BROWSER_TOOLS)
    await env.app.browser.close("agent-1")  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def shipped() -> Iterator[Any]:
    pytest.importorskip("llama_cpp")
    from bastion.llm.worker import WorkerModel

    model = WorkerModel.load(n_ctx=4096)
    yield model
    model.close()


@pytest.mark.real_model
async def test_shipped_model_reads_a_page_with_the_browser(env: BrowserEnv, shipped: Any
                                                           ) -> None:
    agent = Agent(shipped, env.app.gateway, AgentOptions(
        system_prompt="You are a helpful assistant with a web browser.", max_steps=2,
        tools=["browser_navigate"], settings=ChatSettings(temperature=0.0, max_tokens=48)))
    question = f"Open {env.site.url}/ in the browser and tell me the answer to the riddle."
    events = [e async for e in agent.run(question, session_id="real-1")]
    started = [e.call for e in events if isinstance(e, ToolStarted)]
    finished = [e.result for e in events if isinstance(e, ToolFinished)]
    assert started and started[0].name == "browser_navigate", events
    assert started[0].arguments["url"].rstrip("/") == env.site.url
    assert finished[0].ok and "blue penguin" in finished[0].text
    done = events[-1]
    assert isinstance(done, TurnDone) and done.answer.strip()
    print("shipped model answered:", done.answer)
    assert USER not in done.answer and PASSWORD not in done.answer
    await env.app.browser.close("real-1")  # type: ignore[union-attr]
