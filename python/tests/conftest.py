"""Shared fixtures: the tiny models (from `thaw make-tiny-model`), their thaw checkpoints, engines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator, Mapping

import pytest
import torch

HERE = Path(__file__).resolve().parent
PYTHON_DIR = HERE.parent
REPO = PYTHON_DIR.parent
for p in (str(PYTHON_DIR), str(PYTHON_DIR / "gen")):
    if p not in sys.path:
        sys.path.insert(0, p)

from thaw_engine.checkpoint_writer import convert_hf_folder  # noqa: E402
from thaw_engine.weights import read_index  # noqa: E402
from thaw_engine.worker import LoadedModel, LoadRequest, Worker, WorkerOptions  # noqa: E402

ARCHS = ("llama", "mistral", "qwen2")
#: every family `thaw make-tiny-model --arch` makes (each has hf-<arch>.json references)
FAMILIES = (
    "llama", "mistral", "qwen2", "mistral-sliding", "qwen2-sliding", "qwen3", "qwen3-moe", "mixtral",
    "gemma2", "gemma3", "phi3", "qwen3-fp8", "llama-fp8",
)
FIXTURES = HERE / "fixtures"

torch.set_num_threads(min(2, torch.get_num_threads()))


def _thaw_cli() -> list[str] | None:
    node = shutil.which("node")
    cli = REPO / "src" / "cli" / "thaw.js"
    if node is None or not cli.exists():
        return None
    return [node, str(cli)]


def _cli_has(command: str) -> bool:
    cli = _thaw_cli()
    if cli is None:
        return False
    commands = REPO / "src" / "cli" / "commands.ts"
    return commands.exists() and f'"{command}"' in commands.read_text(encoding="utf-8")


class _MadeOnDemand(Mapping[str, Path]):
    """arch → folder, each made the first time it is asked for (13 families: a test run makes only
    those its tests use)."""

    def __init__(self, make: Callable[[str], Path]) -> None:
        self._make = make
        self._made: dict[str, Path] = {}

    def __getitem__(self, arch: str) -> Path:
        if arch not in FAMILIES:
            raise KeyError(arch)
        if arch not in self._made:
            self._made[arch] = self._make(arch)
        return self._made[arch]

    def __iter__(self) -> Iterator[str]:
        return iter(FAMILIES)

    def __len__(self) -> int:
        return len(FAMILIES)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, Path]:
    """arch → Hugging Face folder of the tiny model. THAW_TINY_MODELS=<dir with one folder per arch>
    uses folders made elsewhere (the GPU machine has no Node.js); else `thaw make-tiny-model` runs."""
    given = os.environ.get("THAW_TINY_MODELS")
    if given:
        return {a: Path(given) / a for a in FAMILIES}
    cli = _thaw_cli()
    if cli is None:
        pytest.skip("node and src/cli/thaw.js are needed to make the tiny models")
    root = tmp_path_factory.mktemp("tiny")

    def make(arch: str) -> Path:
        subprocess.run([*cli, "make-tiny-model", str(root / arch), "--arch", arch], check=True, cwd=REPO, capture_output=True)
        return root / arch

    return _MadeOnDemand(make)


def _find_index(store: Path) -> Path:
    for idx in store.rglob("model.idx"):
        return idx.parent
    raise FileNotFoundError(f"no model.idx under {store}")


@pytest.fixture(scope="session")
def tiny_checkpoints(tiny_models: Mapping[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Mapping[str, Path]:
    """arch → thaw checkpoint folder: THAW_TINY_CHECKPOINTS, else `thaw convert` when the CLI has it,
    else the Python writer in thaw_engine.checkpoint_writer."""
    given = os.environ.get("THAW_TINY_CHECKPOINTS")
    if given:
        return {a: Path(given) / a for a in FAMILIES}
    root = tmp_path_factory.mktemp("ckpt")

    def convert(arch: str) -> Path:
        src = tiny_models[arch]
        if _cli_has("convert") and not os.environ.get("THAW_PY_CONVERT"):
            store = root / f"store-{arch}"
            cli = _thaw_cli()
            assert cli is not None
            run = subprocess.run([*cli, "convert", str(src), "--store", str(store)], cwd=REPO, capture_output=True, text=True)
            if run.returncode == 0:
                return _find_index(store)
            warnings.warn(f"`thaw convert` failed ({run.stderr.strip()[-300:]}); using the Python checkpoint writer", stacklevel=1)
        convert_hf_folder(str(src), str(root / arch))
        return root / arch

    return _MadeOnDemand(convert)


LoadFn = Callable[..., LoadedModel]


#: one 16-token KV block of the tiny models in float32 (4 layers x 2 kv heads x 32 dims x K and V x 4 bytes)
TINY_PAGE = 16 * 2048


def load_request(folder: Path, model: str = "", floor_bytes: int = 0, dtype: str = "") -> LoadRequest:
    """LoadWeights of a checkpoint folder, decoded."""
    index = read_index(str(folder))
    config = (folder / "config.json").read_text(encoding="utf-8")
    return LoadRequest(index=index, config_json=config, location="folder", folder=str(folder), kv_cache_bytes=floor_bytes, dtype=dtype, model=model)


@pytest.fixture
def load_model() -> Iterator[LoadFn]:
    """Loads a checkpoint folder into a fresh worker of its own (a KV pool of kv_bytes in pages of one
    tiny-model block), its step loop not running: the test drives the engine; unloaded after the test."""
    workers: list[Worker] = []

    def load(folder: Path, device: str = "cpu", kv_bytes: int = 8 << 20, dtype: str = "", **opts: object) -> LoadedModel:
        opts.setdefault("kv_page_bytes", TINY_PAGE if dtype in ("", "float32") else TINY_PAGE // 2)
        w = Worker(WorkerOptions(device=device, kv_pool_bytes=kv_bytes, **opts))  # type: ignore[arg-type]
        workers.append(w)
        return w.load(load_request(folder, dtype=dtype))

    yield load
    for w in workers:
        w.shutdown()


@pytest.fixture
def tiny_worker() -> Iterator[Callable[..., Worker]]:
    """Makes CPU workers (a pool of pages of one tiny-model block; step loop not started); shut down after."""
    workers: list[Worker] = []

    def make(**opts: object) -> Worker:
        opts.setdefault("kv_pool_bytes", 8 << 20)
        opts.setdefault("kv_page_bytes", TINY_PAGE)
        w = Worker(WorkerOptions(**{"device": "cpu", **opts}))  # type: ignore[arg-type]
        workers.append(w)
        return w

    yield make
    for w in workers:
        w.shutdown()


def load_fixture(arch: str) -> dict:
    path = Path(os.environ.get("THAW_FIXTURES_DIR", FIXTURES)) / f"hf-{arch}.json"
    if not path.exists():
        pytest.skip(f"{path.name} not generated yet (python/tests/make_fixtures.py on the GPU machine)")
    return json.loads(path.read_text(encoding="utf-8"))
