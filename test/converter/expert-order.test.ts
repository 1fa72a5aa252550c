import test from "ava";
import { expertOrder } from "../../src/converter/expert-order.js";

test("expert tensors are grouped by projection in numeric order at the place of the group's first tensor", (t) => {
  const names = [
    "model.embed_tokens.weight",
    "model.layers.0.mlp.experts.0.down_proj.weight",
    "model.layers.0.mlp.experts.0.gate_proj.weight",
    "model.layers.0.mlp.experts.1.down_proj.weight",
    "model.layers.0.mlp.experts.1.gate_proj.weight",
    "model.layers.0.mlp.experts.10.down_proj.weight",
    "model.layers.0.mlp.experts.10.gate_proj.weight",
    "model.layers.0.mlp.experts.2.down_proj.weight",
    "model.layers.0.mlp.experts.2.gate_proj.weight",
    "model.layers.0.mlp.gate.weight",
    "model.norm.weight",
  ];
  t.deepEqual(
    expertOrder(names.map((name) => ({ name }))).map((x) => x.name),
    [
      "model.embed_tokens.weight",
      "model.layers.0.mlp.experts.0.down_proj.weight",
      "model.layers.0.mlp.experts.1.down_proj.weight",
      "model.layers.0.mlp.experts.2.down_proj.weight",
      "model.layers.0.mlp.experts.10.down_proj.weight",
      "model.layers.0.mlp.experts.0.gate_proj.weight",
      "model.layers.0.mlp.experts.1.gate_proj.weight",
      "model.layers.0.mlp.experts.2.gate_proj.weight",
      "model.layers.0.mlp.experts.10.gate_proj.weight",
      "model.layers.0.mlp.gate.weight",
      "model.norm.weight",
    ],
  );
  const dense = ["a", "b", "c"].map((name) => ({ name }));
  t.deepEqual(expertOrder(dense), dense);
});
