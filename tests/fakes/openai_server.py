"""The fake OpenAI server now ships as :mod:`bastion.testing.openai_server` (re-exported).

    python -m tests.fakes.openai_server --port 8101 [--mode ok|error500|slow] [--tokens 20]
"""

from bastion.testing.openai_server import FakeOpenAIServer, FakeServer, main, serve

__all__ = ["FakeOpenAIServer", "FakeServer", "main", "serve"]

if __name__ == "__main__":
    main()
