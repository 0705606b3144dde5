// The kflow API client: every URL relative to the page (it may sit under the API server's
// service proxy), X-Kflow-Token sent when the user gave a token.

import { SseParser } from "./sse";
import type {
  FlowDetail, FlowSummary, Graph, NodeDetail, NodeEvent, NodeSummary, Page,
} from "./types";

const TOKEN_KEY = "kflow.token";

export class ApiError extends Error {
  constructor(readonly status: number, readonly reason: string, message: string) {
    super(message);
  }
}

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value: string | null): void {
  if (value) sessionStorage.setItem(TOKEN_KEY, value.trim());
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const t = token();
  return t ? { ...extra, "X-Kflow-Token": t } : extra;
}

function url(path: string, query: Record<string, string | number | null | undefined> = {}): string {
  const u = new URL(path, document.baseURI);
  for (const [k, v] of Object.entries(query)) {
    if (v !== null && v !== undefined && v !== "") u.searchParams.set(k, String(v));
  }
  return u.toString();
}

const enc = encodeURIComponent;

function flowPath(ns: string, name: string): string {
  return `api/v1/namespaces/${enc(ns)}/flows/${enc(name)}`;
}

async function request<T>(method: string, path: string,
                          query: Record<string, string | number | null | undefined> = {}): Promise<T> {
  const response = await fetch(url(path, query), { method, headers: headers() });
  const text = await response.text();
  if (!response.ok) {
    let reason = response.statusText;
    let message = text;
    try {
      const body = JSON.parse(text) as { error?: string; reason?: string };
      reason = body.reason ?? reason;
      message = body.error ?? message;
    } catch {
      // not JSON: a proxy's own error page; keep its text
    }
    throw new ApiError(response.status, reason, message || `${method} ${path}: ${response.status}`);
  }
  return JSON.parse(text) as T;
}

export const api = {
  whoami: () => request<{ username: string; groups: string[] }>("GET", "api/v1/whoami"),
  flows: (ns: string, q: { phase?: string; q?: string; limit?: number; continue?: string | null }) =>
    request<Page<FlowSummary>>("GET", `api/v1/namespaces/${enc(ns)}/flows`, q),
  flow: (ns: string, name: string) => request<FlowDetail>("GET", flowPath(ns, name)),
  nodes: (ns: string, name: string,
          q: { state?: string; q?: string; limit?: number; continue?: string | null }) =>
    request<Page<NodeSummary>>("GET", `${flowPath(ns, name)}/nodes`, q),
  node: (ns: string, name: string, node: string) =>
    request<NodeDetail>("GET", `${flowPath(ns, name)}/nodes/${enc(node)}`),
  graph: (ns: string, name: string, collapse: number) =>
    request<Graph>("GET", `${flowPath(ns, name)}/graph`, { collapse }),
  action: (ns: string, name: string, verb: "retry" | "cancel" | "suspend" | "resume") =>
    request<FlowSummary>("POST", `${flowPath(ns, name)}/${verb}`),
  remove: (ns: string, name: string) =>
    request<{ deleted: string }>("DELETE", flowPath(ns, name)),
};

export interface FlowEvents {
  flow(summary: FlowSummary): void;
  node(event: NodeEvent): void;
  end(): void;
  status(connected: boolean, error?: string): void;
}

/** Follows the flow's event stream until `end` or abort; reconnects with Last-Event-ID. */
export async function followFlow(ns: string, name: string, on: FlowEvents,
                                 signal: AbortSignal): Promise<void> {
  let lastId: string | null = null;
  let delay = 1000;
  while (!signal.aborted) {
    const parser = new SseParser();
    try {
      const extra: Record<string, string> = { Accept: "text/event-stream" };
      if (lastId) extra["Last-Event-ID"] = lastId;
      const response = await fetch(url(`${flowPath(ns, name)}/events`),
                                   { headers: headers(extra), signal, cache: "no-store" });
      if (!response.ok || !response.body) {
        throw new ApiError(response.status, response.statusText, await response.text());
      }
      on.status(true);
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const message of parser.push(value)) {
          if (parser.lastEventId) lastId = parser.lastEventId;
          if (message.event === "flow") on.flow(JSON.parse(message.data) as FlowSummary);
          else if (message.event === "node") on.node(JSON.parse(message.data) as NodeEvent);
          else if (message.event === "end") {
            on.end();
            return;
          }
        }
      }
      on.status(false, "the event stream closed; reconnecting");
    } catch (error) {
      if (signal.aborted) return;
      on.status(false, String(error instanceof Error ? error.message : error));
      if (error instanceof ApiError && (error.status === 401 || error.status === 403 ||
                                        error.status === 404)) return;
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}
