// Where each node of a (folded) flow graph goes: dagre's layered layout, roots at the top.

import dagre from "@dagrejs/dagre";
import type { Graph, GraphNode } from "./types";

export const NODE_W = 180;
export const NODE_H = 40;
export const GROUP_H = 56;
// Above this many boxes dagre's crossing minimisation takes seconds; a plain longest-path
// layering keeps the page responsive (the server folds fan-outs, so this is rare).
export const DAGRE_LIMIT = 1500;

export interface Box {
  x: number; // centre
  y: number;
  w: number;
  h: number;
}

export interface Layout {
  boxes: Map<string, Box>;
  edges: { from: string; to: string; points: { x: number; y: number }[] }[];
  width: number;
  height: number;
  engine: "dagre" | "layers";
}

function size(node: GraphNode): { w: number; h: number } {
  return { w: NODE_W, h: node.group ? GROUP_H : NODE_H };
}

/** Lays out the graph; edges keep the API's direction (child -> parent). */
export function layoutGraph(graph: Graph): Layout {
  return graph.nodes.length <= DAGRE_LIMIT ? dagreLayout(graph) : layeredLayout(graph);
}

function dagreLayout(graph: Graph): Layout {
  const g = new dagre.graphlib.Graph({ multigraph: false });
  g.setGraph({ rankdir: "TB", nodesep: 24, ranksep: 48, marginx: 16, marginy: 16 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const node of graph.nodes) {
    const { w, h } = size(node);
    g.setNode(node.id, { width: w, height: h });
  }
  // Parents rank above their children: lay out parent -> child, draw child -> parent.
  for (const [child, parent] of graph.edges) {
    if (g.hasNode(child) && g.hasNode(parent)) g.setEdge(parent, child);
  }
  dagre.layout(g);
  const boxes = new Map<string, Box>();
  for (const id of g.nodes()) {
    const n = g.node(id);
    boxes.set(id, { x: n.x, y: n.y, w: n.width, h: n.height });
  }
  const edges = graph.edges
    .filter(([c, p]) => boxes.has(c) && boxes.has(p))
    .map(([from, to]) => {
      const points = (g.edge(to, from)?.points ?? []).map((p: { x: number; y: number }) => ({ x: p.x, y: p.y }));
      return { from, to, points: points.reverse() };
    });
  const label = g.graph();
  return { boxes, edges, width: label.width ?? 0, height: label.height ?? 0, engine: "dagre" };
}

/** Longest-path layers (a node one below its lowest parent), nodes in API order per layer. */
export function layeredLayout(graph: Graph): Layout {
  const parents = new Map<string, string[]>();
  for (const [child, parent] of graph.edges) {
    const list = parents.get(child);
    if (list) list.push(parent);
    else parents.set(child, [parent]);
  }
  const depth = new Map<string, number>();
  const visiting = new Set<string>();
  const depthOf = (id: string): number => {
    const known = depth.get(id);
    if (known !== undefined) return known;
    if (visiting.has(id)) return 0; // a cycle cannot come from the API; never loop on one
    visiting.add(id);
    let d = 0;
    for (const p of parents.get(id) ?? []) d = Math.max(d, depthOf(p) + 1);
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  const rows: GraphNode[][] = [];
  for (const node of graph.nodes) {
    const d = depthOf(node.id);
    (rows[d] ??= []).push(node);
  }
  const boxes = new Map<string, Box>();
  let y = 16;
  let width = 0;
  for (const row of rows) {
    if (!row) continue;
    const h = Math.max(...row.map((n) => size(n).h));
    row.forEach((node, i) => {
      const s = size(node);
      boxes.set(node.id, { x: 16 + i * (NODE_W + 24) + NODE_W / 2, y: y + h / 2, ...s });
    });
    width = Math.max(width, 32 + row.length * (NODE_W + 24));
    y += h + 48;
  }
  const edges = graph.edges
    .filter(([c, p]) => boxes.has(c) && boxes.has(p))
    .map(([from, to]) => {
      const a = boxes.get(from)!;
      const b = boxes.get(to)!;
      return { from, to, points: [{ x: a.x, y: a.y - a.h / 2 }, { x: b.x, y: b.y + b.h / 2 }] };
    });
  return { boxes, edges, width, height: y, engine: "layers" };
}
