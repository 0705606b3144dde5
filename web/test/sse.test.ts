import { describe, expect, it } from "vitest";
import { SseParser } from "../src/sse";

describe("SseParser", () => {
  it("yields named events split across chunks, with multi-line data and ids", () => {
    const p = new SseParser();
    expect(p.push("event: flow\nda")).toEqual([]);
    const out = p.push('ta: {"a":\ndata: 1}\nid: 17-0\n\n: keep-alive\n\nevent: end\ndata:\n\n');
    expect(out).toEqual([
      { event: "flow", data: '{"a":\n1}', id: "17-0" },
      { event: "end", data: "", id: null },
    ]);
    expect(p.lastEventId).toBe("17-0");
  });

  it("accepts CRLF line ends even when a chunk ends between CR and LF", () => {
    const p = new SseParser();
    expect(p.push("event: node\r")).toEqual([]);
    expect(p.push('\ndata: {"name":"a"}\r\n\r\n')).toEqual([
      { event: "node", data: '{"name":"a"}', id: null },
    ]);
  });

  it("defaults the event name to message and ignores comments alone", () => {
    const p = new SseParser();
    expect(p.push(": keep-alive\n\ndata: x\n\n")).toEqual([{ event: "message", data: "x", id: null }]);
  });
});
