import { describe, expect, it } from "vitest";
import { DAGRE_LIMIT, layoutGraph } from "../src/layout";
import type { Graph, GraphNode } from "../src/types";

const node = (id: string): GraphNode => ({ id, name: id, queue: "q", state: "completed", group: null });

// The order workflow's diamond: one payment node under two parents.
const diamond: Graph = {
  nodes: ["fulfill", "reserve", "ship", "payment", "validate"].map(node),
  edges: [["reserve", "fulfill"], ["ship", "fulfill"], ["payment", "reserve"],
          ["payment", "ship"], ["validate", "payment"]],
};

describe("layoutGraph", () => {
  it("draws parents above children and keeps edges child -> parent", () => {
    const layout = layoutGraph(diamond);
    expect(layout.engine).toBe("dagre");
    const y = (id: string) => layout.boxes.get(id)!.y;
    expect(y("fulfill")).toBeLessThan(y("reserve"));
    expect(y("reserve")).toBe(y("ship"));
    expect(y("ship")).toBeLessThan(y("payment"));
    expect(y("payment")).toBeLessThan(y("validate"));
    const fromPayment = layout.edges.filter((e) => e.from === "payment").map((e) => e.to).sort();
    expect(fromPayment).toEqual(["reserve", "ship"]);
    for (const e of layout.edges) {
      const last = e.points[e.points.length - 1]!;
      expect(Math.abs(last.y - y(e.to))).toBeLessThan(Math.abs(last.y - y(e.from)));
    }
  });

  it("falls back to plain layers for graphs dagre would take seconds on", () => {
    const n = DAGRE_LIMIT + 1;
    const nodes = [node("root"), ...Array.from({ length: n }, (_, i) => node(`leaf-${i}`))];
    const edges = nodes.slice(1).map((l): [string, string] => [l.id, "root"]);
    const layout = layoutGraph({ nodes, edges });
    expect(layout.engine).toBe("layers");
    expect(layout.boxes.size).toBe(n + 1);
    const rootY = layout.boxes.get("root")!.y;
    expect(nodes.slice(1).every((l) => layout.boxes.get(l.id)!.y > rootY)).toBe(true);
    expect(new Set(nodes.slice(1).map((l) => layout.boxes.get(l.id)!.x)).size).toBe(n);
  });
});
