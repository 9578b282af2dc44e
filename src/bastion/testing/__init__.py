"""Test doubles for code that plugs into bastion's seams (tools, model backends, plugins).

bastion's own tests use these, and they ship so that plugin authors can test against the same
seams, as pydantic-ai ships ``TestModel`` and httpx ships ``MockTransport``:

* :class:`ScriptedModel` (with :func:`say`, :func:`call`): a model that plays back replies
  and records what it was sent; pass it as ``build_app(config, model=...)``.
* :class:`FakeOpenAIServer` (with :func:`serve`): an OpenAI-compatible chat server on
  loopback that streams canned words, fails with 500 or stalls, for HTTP backends.

Fakes are for unit tests of logic; every feature also needs a test against the real thing.
"""

from bastion.testing.model import Reply, ScriptedModel, SeenCall, call, say
from bastion.testing.openai_server import FakeOpenAIServer, serve

__all__ = ["FakeOpenAIServer", "Reply", "ScriptedModel", "SeenCall", "call", "say", "serve"]
