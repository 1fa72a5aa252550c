// The subcommands of `thaw`, each with a one-line summary and a lazy loader.

/** A subcommand: parses its own arguments and runs. */
export type CommandMain = (args: string[]) => Promise<void>;

interface Command {
  summary: string;
  load: () => Promise<CommandMain>;
}

export const commands = new Map<string, Command>([
  ["agent", { summary: "run the node agent: tiered model cache, engine workers, AgentService", load: async () => (await import("./agent-command.js")).main }],
  ["convert", { summary: "convert a Hugging Face model (Hub id or folder) into the checkpoint store", load: async () => (await import("./convert-command.js")).main }],
  ["converter", { summary: "run the ConverterService", load: async () => (await import("./converter-command.js")).main }],
  ["make-tiny-model", { summary: "write the deterministic tiny test model in Hugging Face layout", load: async () => (await import("./make-tiny-model-command.js")).main }],
]);
