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
  ["agents", { summary: "list the agents an orchestrator knows, with their cache and queue", load: async () => (await import("./agents-command.js")).main }],
  ["explain", { summary: "show the placement score of every agent for a model, term by term", load: async () => (await import("./explain-command.js")).main }],
  ["models", { summary: "register, list and remove models on an orchestrator (add|list|rm)", load: async () => (await import("./models-command.js")).main }],
  ["orchestrator", { summary: "run the orchestrator: OpenAI API edge and SchedulerService on one port", load: async () => (await import("./orchestrator-command.js")).main }],
  ["serve", { summary: "run the whole system on this machine (converter, orchestrator, agent, engine); npm start", load: async () => (await import("./serve-command.js")).main }],
  ["make-tiny-model", { summary: "write the deterministic tiny test model in Hugging Face layout", load: async () => (await import("./make-tiny-model-command.js")).main }],
]);
