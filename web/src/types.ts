// The shapes of docs/API.md, as the web view reads them.

export const NODE_STATES = [
  "waiting-children", "expanding", "deciding", "delayed", "ready", "active", "completed",
  "failed", "ignored", "removed", "cancelled", "skipped",
] as const;
export type NodeState = (typeof NODE_STATES)[number];

export const FLOW_PHASES = [
  "Pending", "Running", "Succeeded", "Failed", "Cancelled", "Suspended",
] as const;
export type FlowPhase = (typeof FLOW_PHASES)[number];

export interface FlowSummary {
  name: string;
  namespace: string;
  uid: string;
  phase: FlowPhase | null;
  total: number;
  done: number;
  counts: Record<string, number>;
  createdAt: string | null;
  startedAt: string | null;
  finishedAt: string | null;
  suspended: boolean;
  cancelled: boolean;
}

export interface FlowDetail extends FlowSummary {
  failures?: { node: string; error: string; attempt: number }[];
  conditions?: { type: string; status: string; reason?: string; message?: string }[];
  queues?: string[];
  roots?: string[];
  /** The flow's exit handlers (spec.onExit), once they started. */
  exitHandlers?: { phase?: string; progress?: string;
                   failures?: { node: string; error: string; attempt: number }[] } | null;
}

export interface Page<T> {
  items: T[];
  continue: string | null;
}

export interface NodeSummary {
  name: string;
  queue: string;
  state: NodeState;
  attempt: number;
  error: string | null;
  progress: unknown;
  result?: unknown;
  startedAt?: string | null;
  finishedAt?: string | null;
}

export interface NodeDetail extends NodeSummary {
  inputs: unknown;
  result: unknown;
  ignoredFailures: Record<string, string>;
  failedChildren: Record<string, string>;
  parents: string[];
  children: string[];
  attempts: { attempt: number; log: string }[];
  logs: { time: string; attempt: number; message: string }[];
  // Totals of the four lists above, each cut at 1000 entries.
  counts?: { parents: number; children: number; ignoredFailures: number; failedChildren: number };
}

export interface GraphGroup {
  count: number;
  counts: Record<string, number>;
  members: string[];
}

export interface GraphNode {
  id: string;
  name: string;
  queue: string;
  state: NodeState | null;
  group: GraphGroup | null;
}

export interface Graph {
  nodes: GraphNode[];
  edges: [string, string][]; // child -> parent
}

export interface NodeEvent {
  name: string;
  state: NodeState;
  attempt: number;
  error: string | null;
}
