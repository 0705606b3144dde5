// The kflow web view: a flows list and a flow page (summary, live DAG, node panel, actions).

import "./style.css";
import { ApiError, api, followFlow, setToken, token } from "./api";
import { DagView, groupLabel } from "./dag";
import { ago, duration, h, json } from "./dom";
import {
  FLOW_PHASES, type FlowDetail, type FlowSummary, type GraphNode, type NodeDetail,
} from "./types";

const app = document.getElementById("app")!;
const who = document.getElementById("who")!;
const TERMINAL = new Set(["Succeeded", "Failed", "Cancelled"]);
const NS_KEY = "kflow.namespace";
let leave: (() => void) | null = null; // stops the current page's stream and timers

function go(hash: string): void {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function showError(where: HTMLElement, error: unknown): void {
  if (error instanceof ApiError && error.status === 401) {
    login(error.message);
    return;
  }
  const text = error instanceof ApiError ? `${error.status} ${error.reason}: ${error.message}`
    : String(error);
  where.replaceChildren(h("div", { class: "error", role: "alert" }, text));
}

function login(reason?: string): void {
  leave?.();
  leave = null;
  const input = h("textarea", { id: "token", rows: 4, placeholder: "a Kubernetes bearer token",
                                spellcheck: false, autocomplete: "off" });
  const form = h("form", { class: "login", onsubmit: (e: Event) => {
    e.preventDefault();
    setToken(input.value);
    route();
  } },
  h("h2", {}, "Sign in"),
  h("p", {}, "The API checks your Kubernetes token (TokenReview) and what RBAC lets you do on " +
              "flows. Paste a token, e.g. from `kubectl create token <service account>`; it is " +
              "kept in this tab only. Through `kflow ui` no token is needed."),
  reason ? h("div", { class: "error", role: "alert" }, reason) : null,
  input, h("button", { type: "submit" }, "Sign in"));
  app.replaceChildren(form);
  input.focus();
}

function present(...items: (Node | null)[]): Node[] {
  return items.filter((i): i is Node => i !== null);
}

function phaseBadge(phase: string | null): HTMLElement {
  return h("span", { class: "phase", "data-phase": phase ?? "Unknown" }, phase ?? "—");
}

/** The exit handlers' line (spec.onExit): their phase, progress and first failure. */
function exitHandlers(detail: FlowDetail): HTMLElement[] {
  const exit = detail.exitHandlers;
  if (!exit) return [];
  const failure = exit.failures?.[0];
  return [h("div", { class: "exit", "data-section": "exit", "data-phase": exit.phase ?? "" },
            `on exit: ${exit.phase ?? "Pending"} ${exit.progress ?? ""}`,
            failure ? ` · ${failure.node}: ${failure.error.split("\n")[0]}` : "")];
}

function progress(s: FlowSummary): HTMLElement {
  const pct = s.total ? Math.round((100 * s.done) / s.total) : 0;
  return h("span", { class: "progress", title: `${s.done} of ${s.total} nodes settled` },
           h("span", { class: "bar" }, h("span", { style: `width:${pct}%` })),
           ` ${s.done}/${s.total}`);
}

function countChips(counts: Record<string, number>): HTMLElement {
  return h("span", { class: "chips" }, ...Object.entries(counts).filter(([, n]) => n > 0)
    .map(([state, n]) => h("span", { class: "chip", "data-state": state }, `${n} ${state}`)));
}

// --- flows list -------------------------------------------------------------------------------

function listPage(ns: string, params: URLSearchParams): void {
  localStorage.setItem(NS_KEY, ns);
  const nsInput = h("input", { id: "ns", value: ns, size: 18, "aria-label": "namespace" });
  const phase = h("select", { id: "phase", "aria-label": "phase" }, h("option", { value: "" }, "any phase"),
                  ...FLOW_PHASES.map((p) => h("option", { value: p }, p)));
  phase.value = params.get("phase") ?? "";
  const q = h("input", { id: "q", value: params.get("q") ?? "", placeholder: "name contains",
                         "aria-label": "name contains" });
  const apply = (): void => {
    const p = new URLSearchParams();
    if (phase.value) p.set("phase", phase.value);
    if (q.value) p.set("q", q.value);
    go(`#/ns/${encodeURIComponent(nsInput.value.trim() || "default")}${p.size ? `?${p}` : ""}`);
  };
  const form = h("form", { class: "filters", onsubmit: (e: Event) => { e.preventDefault(); apply(); } },
                 h("label", {}, "Namespace ", nsInput), phase, q,
                 h("button", { type: "submit" }, "Show"));
  phase.addEventListener("change", apply);
  const body = h("div", { class: "list" }, h("p", { class: "muted" }, "Loading…"));
  app.replaceChildren(h("h2", {}, "Flows"), form, body);
  const pages: (string | null)[] = [null];
  const load = async (index: number): Promise<void> => {
    try {
      const page = await api.flows(ns, { phase: phase.value, q: q.value, limit: 50,
                                         continue: pages[index] });
      pages[index + 1] = page.continue;
      const rows = page.items.map((f) => h("tr", { "data-flow": f.name },
        h("td", {}, h("a", { href: `#/ns/${encodeURIComponent(ns)}/flows/${encodeURIComponent(f.name)}` }, f.name)),
        h("td", {}, phaseBadge(f.phase), f.suspended ? " (suspended)" : ""),
        h("td", {}, progress(f)), h("td", {}, countChips(f.counts)),
        h("td", { title: f.createdAt ?? "" }, ago(f.createdAt)),
        h("td", {}, duration(f.startedAt, f.finishedAt))));
      body.replaceChildren(
        rows.length ? h("table", { class: "flows" },
          h("thead", {}, h("tr", {}, ...["Name", "Phase", "Progress", "Nodes", "Created", "Took"]
            .map((c) => h("th", {}, c)))),
          h("tbody", {}, ...rows))
          : h("p", { class: "muted" }, `No flows in ${ns}${phase.value || q.value ? " match" : ""}.`),
        h("div", { class: "pager" },
          index > 0 ? h("button", { onclick: () => void load(index - 1) }, "← Previous") : null,
          page.continue ? h("button", { id: "next", onclick: () => void load(index + 1) }, "Next →") : null));
    } catch (error) {
      showError(body, error);
    }
  };
  void load(0);
}

// --- flow page --------------------------------------------------------------------------------

function flowPage(ns: string, name: string): void {
  const controller = new AbortController();
  const timers: number[] = [];
  leave = () => {
    controller.abort();
    timers.forEach((t) => clearTimeout(t));
  };
  const summaryEl = h("section", { class: "summary", id: "summary" }, h("p", { class: "muted" }, "Loading…"));
  const failuresEl = h("div", { class: "failures" });
  const live = h("span", { class: "live", id: "live", "data-live": "connecting" }, "connecting…");
  const search = h("input", { id: "search", type: "search", placeholder: "find a node",
                              "aria-label": "find a node" });
  const collapse = h("select", { id: "collapse", "aria-label": "fold fan-outs over" },
                     ...[["20", "fold fan-outs > 20"], ["100", "fold fan-outs > 100"],
                         ["0", "never fold"]].map(([v, t]) => h("option", { value: v! }, t!)));
  const found = h("span", { class: "muted", id: "found" });
  const dagHost = h("div", { class: "dag-host", id: "dag" }, h("p", { class: "muted" }, "Drawing the graph…"));
  const panel = h("aside", { class: "panel", id: "panel" },
                  h("p", { class: "muted" }, "Click a node to see its inputs, result, error, " +
                                             "attempts and logs."));
  app.replaceChildren(
    h("nav", { class: "crumbs" }, h("a", { href: `#/ns/${encodeURIComponent(ns)}` }, `Flows in ${ns}`),
      " / ", h("strong", {}, name)),
    summaryEl, failuresEl,
    h("form", { class: "toolbar", onsubmit: (e: Event) => { e.preventDefault(); void find(); } },
      search, h("button", { type: "submit" }, "Find"), found, collapse,
      h("button", { type: "button", onclick: () => dag.fit() }, "Fit"), live),
    h("div", { class: "flow-body" }, dagHost, panel));

  let summary: FlowSummary | null = null;
  let shownNode: string | null = null;
  let graphTimer: number | null = null;
  let panelTimer: number | null = null;
  const dag = new DagView(dagHost, (node) => void showNode(node));
  dag.svg.remove();

  const renderSummary = (s: FlowSummary): void => {
    summary = s;
    const terminal = TERMINAL.has(s.phase ?? "");
    const button = (verb: string, label: string, enabled: boolean, confirmText?: string) =>
      h("button", { class: `action ${verb}`, "data-action": verb, disabled: !enabled,
                    onclick: () => void act(verb, confirmText) }, label);
    summaryEl.replaceChildren(
      h("div", { class: "title" }, h("h2", {}, s.name), phaseBadge(s.phase),
        s.suspended ? h("span", { class: "tag" }, "suspended") : null,
        s.cancelled ? h("span", { class: "tag" }, "cancel requested") : null),
      h("div", { class: "facts" }, progress(s), countChips(s.counts),
        h("span", {}, `created ${ago(s.createdAt)}`),
        h("span", {}, `ran ${duration(s.startedAt, s.finishedAt)}`)),
      h("div", { class: "actions" },
        button("retry", "Retry failed", s.phase === "Failed"),
        button("suspend", "Suspend", !terminal && !s.suspended),
        button("resume", "Resume", s.suspended),
        button("cancel", "Cancel", !terminal && !s.cancelled,
               `Cancel flow ${s.name}? Running nodes are stopped; this cannot be undone.`),
        button("delete", "Delete", true,
               `Delete flow ${s.name} and everything it stored?`)));
  };

  const act = async (verb: string, confirmText?: string): Promise<void> => {
    if (confirmText && !window.confirm(confirmText)) return;
    try {
      if (verb === "delete") {
        await api.remove(ns, name);
        go(`#/ns/${encodeURIComponent(ns)}`);
        return;
      }
      renderSummary(await api.action(ns, name, verb as "retry" | "cancel" | "suspend" | "resume"));
      follow(); // a retried flow runs again: its stream had ended
      scheduleGraph(500);
    } catch (error) {
      showError(failuresEl, error);
    }
  };

  const loadSummary = async (): Promise<void> => {
    try {
      const detail = await api.flow(ns, name);
      renderSummary(detail);
      performance.mark("kflow:summary");
      failuresEl.replaceChildren(...(detail.failures ?? []).slice(0, 5).map((f) =>
        h("div", { class: "failure" }, h("a", { href: "#", onclick: (e: Event) => {
          e.preventDefault();
          void showNodeByName(f.node);
        } }, f.node), ` [attempt ${f.attempt}] `, f.error.split("\n")[0])),
        ...exitHandlers(detail));
    } catch (error) {
      showError(summaryEl, error);
    }
  };

  let firstDraw = true;
  let graphCost = 0; // ms the last /graph took: a big flow's graph is refetched less often
  const loadGraph = async (): Promise<void> => {
    try {
      const started = performance.now();
      const graph = await api.graph(ns, name, Number(collapse.value));
      graphCost = performance.now() - started;
      if (!dag.svg.isConnected) dagHost.replaceChildren(dag.svg);
      const layout = dag.draw(graph);
      dagHost.dataset.layout = layout.engine;
      dagHost.dataset.nodes = String(graph.nodes.length);
      if (firstDraw) {
        firstDraw = false;
        performance.mark("kflow:dag");
        document.body.dataset.dag = "drawn";
      }
    } catch (error) {
      showError(dagHost, error);
    }
  };
  const scheduleGraph = (ms: number): void => {
    if (graphTimer !== null) return;
    graphTimer = window.setTimeout(() => {
      graphTimer = null;
      void loadGraph();
    }, ms);
    timers.push(graphTimer);
  };
  collapse.addEventListener("change", () => void loadGraph());

  const section = (title: string, ...content: (Node | string | null)[]) =>
    h("section", { "data-section": title.toLowerCase().split(" ")[0]! }, h("h4", {}, title),
      ...content);
  const pre = (value: unknown) => h("pre", {}, typeof value === "string" ? value : json(value));

  const showNodeByName = async (node: string): Promise<void> => {
    shownNode = node;
    panel.dataset.shown = node;
    try {
      renderNode(await api.node(ns, name, node));
    } catch (error) {
      showError(panel, error);
    }
  };
  const of = (shown: number, total?: number): string =>
    total !== undefined && total > shown ? ` (first ${shown} of ${total})` : "";
  const renderNode = (d: NodeDetail): void => {
    const link = (n: string) => h("a", { href: "#", onclick: (e: Event) => {
      e.preventDefault();
      dag.highlight(n);
      void showNodeByName(n);
    } }, n);
    const failed = (title: string, m: Record<string, string>) => Object.keys(m).length
      ? section(title, h("ul", {}, ...Object.entries(m).map(([c, err]) =>
          h("li", {}, link(c), ": ", err.split("\n")[0])))) : null;
    panel.dataset.state = d.state;
    panel.replaceChildren(...present(
      h("h3", {}, d.name), h("p", {}, h("span", { class: "chip", "data-state": d.state }, d.state),
        ` queue ${d.queue} · attempt `, h("span", { id: "attempt" }, String(d.attempt)),
        d.progress !== null && d.progress !== undefined ? ` · progress ${json(d.progress)}` : "",
        d.startedAt ? ` · started ${ago(d.startedAt)}, ${d.finishedAt ? "ran" : "running for"} ` +
          duration(d.startedAt, d.finishedAt ?? null) : ""),
      d.state === "failed" && summary?.phase === "Failed"
        ? h("button", { class: "action retry", "data-action": "retry-node",
                        onclick: () => void act("retry") }, "Retry failed nodes") : null,
      d.error ? section("Error", h("pre", { class: "error-text" }, d.error)) : null,
      section("Inputs", pre(d.inputs)),
      d.result !== null && d.result !== undefined ? section("Result", pre(d.result)) : null,
      failed("Ignored failures", d.ignoredFailures ?? {}),
      failed("Failed children", d.failedChildren ?? {}),
      d.children.length ? section(`Children${of(d.children.length, d.counts?.children)}`,
        h("p", {}, ...d.children.flatMap((c, i) => [i ? ", " : "", link(c)]))) : null,
      d.parents.length ? section(`Parents${of(d.parents.length, d.counts?.parents)}`,
        h("p", {}, ...d.parents.flatMap((c, i) => [i ? ", " : "", link(c)]))) : null,
      section("Attempts", ...(d.attempts.length ? d.attempts.map((a) =>
        h("details", { class: "attempt", "data-attempt": a.attempt, open: a === d.attempts[d.attempts.length - 1] },
          h("summary", {}, `attempt ${a.attempt}`), h("pre", {}, a.log || "(no log kept)")))
        : [h("p", { class: "muted" }, "no attempt has a kept log")])),
      section("Logs", d.logs.length ? h("pre", { class: "logs" }, d.logs.map((l) =>
        `${l.time} [${l.attempt}] ${l.message}`).join("\n")) : h("p", { class: "muted" }, "no job.log() lines"))));
  };
  const showNode = async (node: GraphNode): Promise<void> => {
    if (!node.group) {
      await showNodeByName(node.name);
      return;
    }
    shownNode = null;
    panel.dataset.shown = node.id;
    const g = node.group;
    panel.replaceChildren(
      h("h3", {}, `${g.count} × ${node.name}`), h("p", {}, `queue ${node.queue}`),
      countChips(g.counts), h("p", { class: "muted" }, groupLabel(g.counts)),
      section(`Members (first ${g.members.length} of ${g.count})`,
        h("ul", { class: "members" }, ...g.members.map((m) => h("li", {},
          h("a", { href: "#", "data-member": m, onclick: (e: Event) => {
            e.preventDefault();
            void showNodeByName(m);
          } }, m))))),
      h("p", { class: "muted" }, "Find any member by name with the search box."));
  };

  const find = async (): Promise<void> => {
    const text = search.value.trim();
    if (!text) return;
    if (dag.highlight(text)) {
      found.textContent = "";
      if (dag.has(text)) await showNodeByName(text);
      return;
    }
    try {
      // A filtered page scans a bounded slice of the flow: it may hold none yet say go on.
      found.textContent = "searching…";
      let page = await api.nodes(ns, name, { q: text, limit: 50 });
      for (let pages = 1; !page.items.some((n) => n.name === text) && page.continue &&
           pages < 200; pages++) {
        const next = await api.nodes(ns, name, { q: text, limit: 50, continue: page.continue });
        page = { items: [...page.items, ...next.items], continue: next.continue };
        if (page.items.length >= 50) break;
      }
      const exact = page.items.find((n) => n.name === text) ?? page.items[0];
      if (!exact) {
        found.textContent = `no node matches “${text}”`;
        return;
      }
      found.textContent = page.items.length > 1 ? `${page.items.length}${page.continue ? "+" : ""} matches` : "";
      shownNode = exact.name;
      panel.dataset.shown = exact.name;
      const detail = await api.node(ns, name, exact.name);
      if (!dag.highlight(exact.name)) dag.highlightGroupOf(detail.queue, detail.parents);
      renderNode(detail);
    } catch (error) {
      showError(panel, error);
    }
  };

  let stream: AbortController | null = null;
  const follow = (): void => {
    stream?.abort();
    const mine = new AbortController();
    stream = mine;
    controller.signal.addEventListener("abort", () => mine.abort());
    void followFlow(ns, name, {
      flow: (s) => renderSummary(s),
      node: (e) => {
        // A node folded into a group: its counts come with the next graph, fetched at most
        // every few seconds, and less often for a graph that is costly to build.
        if (!dag.setState(e.name, e.state)) scheduleGraph(Math.max(3000, 10 * graphCost));
        if (e.name === shownNode && panelTimer === null) {
          panelTimer = window.setTimeout(() => {
            panelTimer = null;
            if (shownNode) void showNodeByName(shownNode);
          }, 300);
          timers.push(panelTimer);
        }
      },
      end: () => {
        live.dataset.live = "ended";
        live.textContent = "flow ended";
        void loadSummary();
        scheduleGraph(200);
      },
      status: (connected, error) => {
        if (mine.signal.aborted) return;
        live.dataset.live = connected ? "live" : "down";
        live.textContent = connected ? "live" : `offline: ${error ?? ""}`;
      },
    }, mine.signal);
  };

  // Both at once: the summary paints in milliseconds, the graph of a big flow takes longer.
  void loadSummary();
  void loadGraph();
  follow();
  // While the stream is down (a proxy that buffers, a server restart), poll instead.
  const poll = window.setInterval(() => {
    if (live.dataset.live === "down" && !TERMINAL.has(summary?.phase ?? "")) {
      void loadSummary();
      scheduleGraph(0);
    }
  }, 10000);
  const stop = leave;
  leave = () => {
    clearInterval(poll);
    stop();
  };
}

// --- routing ----------------------------------------------------------------------------------

function route(): void {
  leave?.();
  leave = null;
  delete document.body.dataset.dag; // set again once this page's DAG is drawn
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = (path ?? "").split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query ?? "");
  if (parts[0] === "ns" && parts[1] && parts[2] === "flows" && parts[3]) flowPage(parts[1], parts[3]);
  else if (parts[0] === "ns" && parts[1]) listPage(parts[1], params);
  else listPage(localStorage.getItem(NS_KEY) ?? "default", params);
  void showWho();
}

async function showWho(): Promise<void> {
  try {
    const me = await api.whoami();
    who.replaceChildren(h("span", { id: "username" }, me.username),
      ...(token() ? [h("button", { class: "link", onclick: () => { setToken(null); login(); } },
                       "sign out")] : []));
  } catch {
    who.replaceChildren(token() ? "token refused" : "not signed in",
      h("button", { class: "link", onclick: () => login() }, "sign in"));
  }
}

window.addEventListener("hashchange", route);
route();
