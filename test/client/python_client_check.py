"""Drives python/thaw_client against a running orchestrator (run by python-client.test.ts).

usage: python_client_check.py ADDRESS MODEL [--expect-agent ID]
Prints one JSON object with what it saw; exits non-zero on any failure.
"""

from __future__ import annotations

import json
import sys

import grpc

from thaw_client import ThawClient, ThawError


def main() -> None:
    address, model = sys.argv[1], sys.argv[2]
    out: dict[str, object] = {}
    with ThawClient(address) as thaw:
        out["models"] = [m.spec.id for m in thaw.list_models()]
        out["agents"] = [a.status.agent_id for a in thaw.list_agents()]
        explained = thaw.explain_placement(model)
        out["chosen"] = [s.agent_id for s in explained.scores if s.chosen]
        out["weights"] = [explained.alpha, explained.beta, explained.gamma, explained.delta]
        chat = thaw.chat_text(model, [{"role": "user", "content": "hi"}], max_tokens=4, seed=3)
        out["chat"] = {"text": chat.text, "finish": chat.finish_reasons, "completion_tokens": chat.completion_tokens, "agents": chat.agent_ids}
        deltas = list(thaw.complete(model, "Once", max_tokens=3, n=2))
        out["complete"] = {"indexes": sorted({d.index for d in deltas}), "finished": sum(1 for d in deltas if d.finish_reason)}
        try:
            thaw.chat_text("no-such-model", [{"role": "user", "content": "x"}])
            out["not_found"] = None
        except ThawError as err:
            out["not_found"] = err.code.name
            assert err.code == grpc.StatusCode.NOT_FOUND
        info = thaw.register_model("extra", source="org/extra", keep_alive_seconds=42)
        out["registered"] = [info.spec.id, info.spec.source, info.spec.keep_alive_seconds]
        thaw.unregister_model("extra")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
