"""thaw's engine worker: EngineService (gRPC over a unix socket) on PyTorch.

Run it with ``python -m thaw_engine --socket PATH [--device cpu|cuda:0]`` with ``python/`` and
``python/gen`` on PYTHONPATH. Importing the package does nothing else: torch and grpc are imported
by the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"
