"""thaw_client: a Python client for a thaw orchestrator's SchedulerService (gRPC).

    from thaw_client import ThawClient

    with ThawClient("127.0.0.1:8000") as thaw:
        thaw.register_model("tiny", source="/models/tiny")
        for delta in thaw.chat("tiny", [{"role": "user", "content": "hi"}], max_tokens=16):
            print(delta.text, end="", flush=True)

The generated messages and stubs live under the import root ``thaw`` (``python/gen`` in a
checkout); the raw stub is ``ThawClient.stub`` for anything the helpers do not cover.
"""

from __future__ import annotations

from .client import Completion, Delta, ThawClient, ThawError

__all__ = ["Completion", "Delta", "ThawClient", "ThawError"]
