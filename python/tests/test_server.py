"""A real worker process: gRPC over a unix socket, streaming, cancellation, errors, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from conftest import PYTHON_DIR
from thaw.engine.v1 import engine_pb2, engine_service_pb2 as pb, engine_service_pb2_grpc
from thaw_engine.weights import read_index

PROMPTS = [[256, 72, 101, 108, 108, 111], [256] + list(range(30, 90)), [256, 7, 7, 7], [256] + list(range(200, 255))]


class Worker:
    def __init__(self, tmp: Path) -> None:
        self.socket = str(tmp / "engine.sock")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PYTHON_DIR), str(PYTHON_DIR / "gen")]), "PYTHONUNBUFFERED": "1"}
        self.stderr = open(tmp / "worker.log", "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thaw_engine", "--socket", self.socket, "--device", "cpu", "--threads", "1"],
            stdout=subprocess.PIPE, stderr=self.stderr, env=env, text=True,
        )
        line = self.proc.stdout.readline()  # blocks until ready (or exit)
        if not line:
            self.stderr.seek(0)
            raise RuntimeError("worker exited before ready:\n" + self.stderr.read())
        self.ready = json.loads(line)
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        self.stub = engine_service_pb2_grpc.EngineServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    w = Worker(tmp_path_factory.mktemp("worker"))
    yield w
    w.close()


def _load_folder(stub, folder: Path, model: str = "", **kw):
    index = read_index(str(folder))
    return stub.LoadWeights(pb.LoadWeightsRequest(
        index=index, memory=engine_pb2.MemoryDescriptor(folder=engine_pb2.CheckpointFolder(path=str(folder))),
        config_json=(folder / "config.json").read_text(), kv_cache_bytes=kw.get("kv", 8 << 20), model=model))


def _greedy(n: int, **kw) -> engine_pb2.SamplingParams:
    return engine_pb2.SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True, **kw)


def _collect(stub, prompt, sampling, request_id="r", model=""):
    msgs = list(stub.Generate(pb.GenerateRequest(request_id=request_id, prompt_token_ids=prompt, sampling=sampling, model=model)))
    return [t for m in msgs for t in m.token_ids], msgs


def test_ready_line_and_no_model(worker):
    assert worker.ready["event"] == "ready" and worker.ready["pid"] == worker.proc.pid
    assert worker.ready["device"] == "cpu"
    s = worker.stub.GetStats(pb.GetStatsRequest())
    assert s.device == "cpu" and s.pid == worker.proc.pid and not s.HasField("model") and s.running == 0
    with pytest.raises(grpc.RpcError) as e:
        _collect(worker.stub, [1, 2], _greedy(3))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as e:
        worker.stub.AllocateWeights(pb.AllocateWeightsRequest(bytes=1 << 20))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_load_from_host_memory_and_generate(worker, tiny_checkpoints, load_model):
    folder = tiny_checkpoints["llama"]
    index = read_index(str(folder))
    fd = os.memfd_create("pool")
    offsets, pos = [], 4096
    for c in index.chunks:
        os.pwrite(fd, (folder / c.file_name).read_bytes(), pos)
        offsets.append(pos - 4096)
        pos += c.byte_length
    try:
        r = worker.stub.LoadWeights(pb.LoadWeightsRequest(
            index=index,
            memory=engine_pb2.MemoryDescriptor(host=engine_pb2.HostMemory(path=f"/proc/{os.getpid()}/fd/{fd}", offset=4096, length=pos - 4096), chunk_offsets=offsets),
            config_json=(folder / "config.json").read_text(), kv_cache_bytes=8 << 20))
    finally:
        os.close(fd)  # the worker keeps its own mapping
    assert r.device == "cpu" and r.block_size == 16 and r.kv_blocks > 0 and r.max_model_len == 2048
    want = load_model(folder).engine.generate(PROMPTS[:1], __import__("thaw_engine.sampling", fromlist=["x"]).SamplingOptions(temperature=0.0, max_tokens=12, ignore_eos=True))[0].token_ids
    got, msgs = _collect(worker.stub, PROMPTS[0], _greedy(12, top_logprobs=2))
    assert got == want
    assert msgs[0].prompt_tokens == len(PROMPTS[0]) and msgs[-1].finish_reason == engine_pb2.FINISH_REASON_LENGTH
    lps = [lp for m in msgs for lp in m.logprobs]
    assert len(lps) == 12 and all(len(lp.top) == 2 and lp.sampled.logprob <= 0 for lp in lps)
    s = worker.stub.GetStats(pb.GetStatsRequest())
    assert s.model.model_id and s.kv_blocks_total == r.kv_blocks and s.generated_tokens >= 12


def test_concurrent_streams_equal_sequential(worker):
    seq = [_collect(worker.stub, p, _greedy(16))[0] for p in PROMPTS]
    results: dict[int, list[int]] = {}

    def run(i: int) -> None:
        results[i] = _collect(worker.stub, PROMPTS[i], _greedy(16), f"c{i}")[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert [results[i] for i in range(len(PROMPTS))] == seq


def test_prefix_cache_reported(worker):
    shared = [256] + list(range(100, 164))
    _collect(worker.stub, shared + [1], _greedy(2))
    _, msgs = _collect(worker.stub, shared + [2], _greedy(2))
    assert msgs[0].cached_prompt_tokens == 64
    assert worker.stub.GetStats(pb.GetStatsRequest()).prefix_hit_rate > 0


def test_cancel_frees_the_sequence(worker):
    call = worker.stub.Generate(pb.GenerateRequest(request_id="long", prompt_token_ids=[256] + [3] * 40, sampling=_greedy(100000)))
    n = 0
    for m in call:
        n += len(m.token_ids)
        if n >= 3:
            break
    s = worker.stub.GetStats(pb.GetStatsRequest())
    assert s.running == 1 and s.kv_blocks_used > 0
    call.cancel()
    deadline = time.time() + 5
    while time.time() < deadline:
        s = worker.stub.GetStats(pb.GetStatsRequest())
        if s.running == 0 and s.kv_blocks_used == 0:
            break
        time.sleep(0.02)
    assert s.running == 0 and s.kv_blocks_used == 0


def test_errors(worker, tiny_checkpoints, tmp_path):
    with pytest.raises(grpc.RpcError) as e:
        _collect(worker.stub, [100000], _greedy(2))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        _collect(worker.stub, [1, 2], engine_pb2.SamplingParams(top_p=0.0))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        _load_folder(worker.stub, tiny_checkpoints["llama"])
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS  # a second model needs another name


def test_unload_then_load_folder_then_bad_checkpoints(worker, tiny_checkpoints, tmp_path):
    freed = worker.stub.Unload(pb.UnloadRequest()).bytes_freed
    assert freed > 0
    assert not worker.stub.GetStats(pb.GetStatsRequest()).HasField("model")
    r = _load_folder(worker.stub, tiny_checkpoints["qwen2"])
    assert r.max_model_len == 2048
    assert len(_collect(worker.stub, PROMPTS[1], _greedy(5))[0]) == 5
    worker.stub.Unload(pb.UnloadRequest())
    with pytest.raises(grpc.RpcError) as e:  # an empty index: the worker reads model.idx itself
        worker.stub.LoadWeights(pb.LoadWeightsRequest(
            memory=engine_pb2.MemoryDescriptor(folder=engine_pb2.CheckpointFolder(path=str(tmp_path / "missing"))),
            config_json=(tiny_checkpoints["llama"] / "config.json").read_text()))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    folder = tiny_checkpoints["llama"]
    index = read_index(str(folder))
    with pytest.raises(grpc.RpcError) as e:
        worker.stub.LoadWeights(pb.LoadWeightsRequest(
            index=index, memory=engine_pb2.MemoryDescriptor(folder=engine_pb2.CheckpointFolder(path=str(folder))),
            config_json='{"architectures": ["GPT2LMHeadModel"]}'))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_several_models_by_name(worker, tiny_checkpoints):
    """Three models side by side: Generate routes by name, Unload of one leaves another's stream intact."""
    stub = worker.stub
    stub.Unload(pb.UnloadRequest())
    names = {arch: f"tiny-{arch}@main" for arch in ("llama", "mistral", "qwen2")}
    for arch, name in names.items():
        r = _load_folder(stub, tiny_checkpoints[arch], model=name, kv=1 << 20)
        assert r.model == name and r.kv_blocks_floor > 0
    alone = {arch: _collect(stub, PROMPTS[1], _greedy(10), model=name)[0] for arch, name in names.items()}
    assert len({tuple(v) for v in alone.values()}) == 3  # different weights, different tokens
    for code, model in ((grpc.StatusCode.INVALID_ARGUMENT, ""), (grpc.StatusCode.NOT_FOUND, "nope@main")):
        with pytest.raises(grpc.RpcError) as e:
            _collect(stub, PROMPTS[0], _greedy(2), model=model)
        assert e.value.code() == code
    with pytest.raises(grpc.RpcError) as e:
        _load_folder(stub, tiny_checkpoints["llama"], model=names["llama"])
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    s = stub.GetStats(pb.GetStatsRequest())
    assert sorted(m.model for m in s.models) == sorted(names.values())
    assert all(m.generated_tokens == 10 and m.block_size == 16 and m.max_model_len > 0 for m in s.models)
    assert s.generated_tokens == 30 and s.kv_pool_bytes > 0 and s.kv_page_bytes > 0
    call = stub.Generate(pb.GenerateRequest(request_id="keeps", prompt_token_ids=PROMPTS[1], sampling=_greedy(40), model=names["mistral"]))
    it = iter(call)
    got = list(next(it).token_ids)
    assert stub.Unload(pb.UnloadRequest(model=names["llama"])).bytes_freed > 0
    assert stub.Unload(pb.UnloadRequest(model=names["llama"])).bytes_freed == 0  # already gone
    got += [t for m in it for t in m.token_ids]
    assert got[:10] == alone["mistral"] and len(got) == 40
    with pytest.raises(grpc.RpcError) as e:
        _collect(stub, PROMPTS[0], _greedy(2), model=names["llama"])
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert sorted(m.model for m in stub.GetStats(pb.GetStatsRequest()).models) == [names["mistral"], names["qwen2"]]
    stub.Unload(pb.UnloadRequest())
    assert not stub.GetStats(pb.GetStatsRequest()).models


def test_sigterm_exits_cleanly(worker, tiny_checkpoints):
    _load_folder(worker.stub, tiny_checkpoints["llama"])
    call = worker.stub.Generate(pb.GenerateRequest(request_id="during-shutdown", prompt_token_ids=[256, 1, 2], sampling=_greedy(100000)))
    next(iter(call))
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=20) == 0
    assert not os.path.exists(worker.socket)
