// The flow's DAG as SVG: one <g data-node> per node or folded group, one <path data-edge-*>
// per edge (child -> parent, arrow at the parent), colours from data-state, pan and zoom.

import { layoutGraph, type Layout } from "./layout";
import type { Graph, GraphNode, NodeState } from "./types";

const SVG = "http://www.w3.org/2000/svg";
const MIN_FIT = 0.45; // below this scale the labels cannot be read
const BAR_ORDER: NodeState[] = ["completed", "active", "ready", "delayed", "expanding",
                                "deciding", "waiting-children", "failed", "ignored", "removed",
                                "cancelled", "skipped"];

function el<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number>,
                                                  parent?: Element): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  parent?.appendChild(e);
  return e;
}

function shorten(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** The state a group shows: failures first, then what is still moving, then done. */
export function groupState(counts: Record<string, number>): NodeState {
  const order: NodeState[] = ["failed", "active", "ready", "delayed", "expanding", "deciding",
                              "waiting-children", "cancelled", "removed", "ignored", "skipped",
                              "completed"];
  return order.find((s) => (counts[s] ?? 0) > 0) ?? "waiting-children";
}

export function groupLabel(counts: Record<string, number>): string {
  return Object.entries(counts).filter(([, n]) => n > 0)
    .map(([s, n]) => `${n} ${s}`).join(" · ");
}

export class DagView {
  readonly svg: SVGSVGElement;
  private readonly world: SVGGElement;
  private nodeEls = new Map<string, SVGGElement>(); // by node name (groups: by id)
  private graph: Graph = { nodes: [], edges: [] };
  layout: Layout | null = null;
  private view = { x: 0, y: 0, k: 1 };
  private selected: SVGGElement | null = null;

  constructor(host: HTMLElement, private readonly onSelect: (node: GraphNode) => void) {
    this.svg = el("svg", { class: "dag", role: "img", "aria-label": "flow graph" });
    const defs = el("defs", {}, this.svg);
    const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
                                  markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
                      defs);
    el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }, marker);
    this.world = el("g", { class: "world" }, this.svg);
    host.appendChild(this.svg);
    this.panZoom();
  }

  /** Draws the graph (replacing what was drawn); returns the layout engine used. */
  draw(graph: Graph): Layout {
    this.graph = graph;
    const layout = layoutGraph(graph);
    this.layout = layout;
    this.world.replaceChildren();
    this.nodeEls.clear();
    const byId = new Map(graph.nodes.map((n) => [n.id, n]));
    const edges = el("g", { class: "edges" }, this.world);
    for (const edge of layout.edges) {
      const d = edge.points.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`)
        .join(" ");
      el("path", { d, class: "edge", "marker-end": "url(#arrow)",
                   "data-edge-from": byId.get(edge.from)?.name ?? edge.from,
                   "data-edge-to": byId.get(edge.to)?.name ?? edge.to }, edges);
    }
    const nodes = el("g", { class: "nodes" }, this.world);
    for (const node of graph.nodes) {
      const box = layout.boxes.get(node.id);
      if (!box) continue;
      const state = node.group ? groupState(node.group.counts) : (node.state ?? "waiting-children");
      const g = el("g", {
        class: node.group ? "node group" : "node", "data-node": node.name, "data-id": node.id,
        "data-state": state, transform: `translate(${box.x - box.w / 2},${box.y - box.h / 2})`,
        tabindex: 0,
      }, nodes);
      if (node.group) g.setAttribute("data-group", String(node.group.count));
      el("rect", { width: box.w, height: box.h, rx: 6 }, g);
      const title = el("title", {}, g);
      title.textContent = node.group
        ? `${node.group.count} × ${node.queue}: ${groupLabel(node.group.counts)}`
        : `${node.name} (${node.queue}): ${state}`;
      const label = el("text", { x: 10, y: 17, class: "label" }, g);
      label.textContent = shorten(node.group ? `${node.group.count} × ${node.name}` : node.name, 24);
      const sub = el("text", { x: 10, y: 32, class: "sub" }, g);
      sub.textContent = shorten(node.group ? node.queue : `${node.queue} · ${state}`, 28);
      if (node.group) {
        const counts = el("text", { x: 10, y: 45, class: "sub" }, g);
        counts.textContent = shorten(groupLabel(node.group.counts), 30);
        // A bar of the members' states, in proportion.
        let x = 6;
        const width = box.w - 12;
        for (const st of BAR_ORDER) {
          const n = node.group.counts[st] ?? 0;
          if (!n) continue;
          const part = (width * n) / node.group.count;
          el("rect", { x, y: box.h - 7, width: Math.max(part, 1), height: 4, class: "state-bar",
                       "data-state": st }, g);
          x += part;
        }
      }
      g.addEventListener("click", () => this.select(node));
      g.addEventListener("keydown", (e) => { if (e.key === "Enter") this.select(node); });
      this.nodeEls.set(node.group ? node.id : node.name, g);
    }
    this.fit();
    return layout;
  }

  /** A node changed state (from the event stream); false if it is not drawn on its own. */
  setState(name: string, state: NodeState): boolean {
    const g = this.nodeEls.get(name);
    if (!g || g.hasAttribute("data-group")) return false;
    g.setAttribute("data-state", state);
    const sub = g.querySelector("text.sub");
    const node = this.graph.nodes.find((n) => n.name === name);
    if (sub && node) sub.textContent = shorten(`${node.queue} · ${state}`, 28);
    return true;
  }

  has(name: string): boolean {
    return this.nodeEls.has(name);
  }

  /** Marks and centres a drawn node (or the group holding it); false if none. */
  highlight(name: string): boolean {
    let g = this.nodeEls.get(name);
    if (!g) {
      const group = this.graph.nodes.find((n) => n.group?.members.includes(name));
      g = group ? this.nodeEls.get(group.id) : undefined;
    }
    this.svg.querySelectorAll(".highlight").forEach((e) => e.classList.remove("highlight"));
    if (!g) return false;
    g.classList.add("highlight");
    const id = g.getAttribute("data-id")!;
    const box = this.layout?.boxes.get(id);
    if (box) this.centre(box.x, box.y);
    return true;
  }

  /** Marks and centres the group a node was folded into, known by its queue and parents
   * (a group lists only its first members). */
  highlightGroupOf(queue: string, parents: string[]): boolean {
    const want = [...parents].sort().join("\n");
    const nameOf = new Map(this.graph.nodes.map((n) => [n.id, n.name]));
    const parentsOf = new Map<string, string[]>();
    for (const [child, parent] of this.graph.edges) {
      parentsOf.set(child, [...(parentsOf.get(child) ?? []), nameOf.get(parent) ?? parent]);
    }
    const group = this.graph.nodes.find((n) => n.group && n.queue === queue &&
      (parentsOf.get(n.id) ?? []).sort().join("\n") === want);
    return group ? this.highlight(group.id) : false;
  }

  private select(node: GraphNode): void {
    this.selected?.classList.remove("selected");
    this.selected = this.nodeEls.get(node.group ? node.id : node.name) ?? null;
    this.selected?.classList.add("selected");
    this.onSelect(node);
  }

  fit(): void {
    if (!this.layout) return;
    const rect = this.svg.getBoundingClientRect();
    const w = rect.width || 800;
    const h = rect.height || 500;
    const k = Math.min(1.2, w / (this.layout.width + 32), h / (this.layout.height + 32));
    if (k >= MIN_FIT) {
      this.view = { k, x: (w - this.layout.width * k) / 2, y: 0 };
      this.view.y = Math.max(8, (h - this.layout.height * k) / 2);
    } else {
      // Too wide or tall to read whole (hundreds of groups side by side): readable boxes,
      // the roots at the top centre; wheel and drag show the rest.
      const top = [...this.layout.boxes.values()].reduce((a, b) => (b.y < a.y ? b : a));
      this.view = { k: MIN_FIT, x: w / 2 - top.x * MIN_FIT, y: 16 };
    }
    this.apply();
  }

  private centre(x: number, y: number): void {
    const rect = this.svg.getBoundingClientRect();
    this.view.k = Math.max(this.view.k, 0.8);
    this.view.x = rect.width / 2 - x * this.view.k;
    this.view.y = rect.height / 2 - y * this.view.k;
    this.apply();
  }

  private apply(): void {
    const { x, y, k } = this.view;
    this.world.setAttribute("transform", `translate(${x},${y}) scale(${k})`);
  }

  private panZoom(): void {
    let drag: { x: number; y: number } | null = null;
    this.svg.addEventListener("pointerdown", (e) => {
      if ((e.target as Element).closest(".node")) return;
      drag = { x: e.clientX - this.view.x, y: e.clientY - this.view.y };
      this.svg.setPointerCapture(e.pointerId);
    });
    this.svg.addEventListener("pointermove", (e) => {
      if (!drag) return;
      this.view.x = e.clientX - drag.x;
      this.view.y = e.clientY - drag.y;
      this.apply();
    });
    this.svg.addEventListener("pointerup", () => { drag = null; });
    this.svg.addEventListener("wheel", (e) => {
      e.preventDefault();
      const rect = this.svg.getBoundingClientRect();
      const px = e.clientX - rect.left;
      const py = e.clientY - rect.top;
      const k = Math.min(4, Math.max(0.02, this.view.k * Math.exp(-e.deltaY * 0.0015)));
      this.view.x = px - ((px - this.view.x) * k) / this.view.k;
      this.view.y = py - ((py - this.view.y) * k) / this.view.k;
      this.view.k = k;
      this.apply();
    }, { passive: false });
  }
}
