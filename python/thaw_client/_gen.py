"""The generated messages and stubs (import root ``thaw``).

Installed packages ship them on the path; in a checkout they sit in ``python/gen`` beside this
package, which is added to ``sys.path`` only when ``thaw`` cannot be imported otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from thaw.agent.v1 import agent_pb2
except ImportError:  # a checkout: python/gen beside python/thaw_client
    _gen = Path(__file__).resolve().parent.parent / "gen"
    if (_gen / "thaw").is_dir():
        sys.path.append(str(_gen))
    from thaw.agent.v1 import agent_pb2

from thaw.engine.v1 import engine_pb2
from thaw.scheduler.v1 import scheduler_pb2, scheduler_service_pb2, scheduler_service_pb2_grpc

__all__ = ["agent_pb2", "engine_pb2", "scheduler_pb2", "scheduler_service_pb2", "scheduler_service_pb2_grpc"]
