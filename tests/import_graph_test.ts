// The import graph between lib/ folders has no cycle, and core depends on no other folder.
// Every import counts, type-only ones included: "kernels implement interfaces that routing owns" means
// kernels may import routing's types, and routing then never imports kernels.
import assert from "node:assert/strict";

const LIB = new URL("../lib/", import.meta.url);

/** Folder of a lib-relative path: `routing/gate.ts` → `routing`; top-level files are their own node. */
function folderOf(rel: string): string {
  const slash = rel.indexOf("/");
  return slash < 0 ? rel.replace(/\.ts$/, "") : rel.slice(0, slash);
}

function* walk(dir: URL, prefix = ""): Generator<string> {
  for (const entry of Deno.readDirSync(dir)) {
    if (entry.isDirectory) yield* walk(new URL(`${entry.name}/`, dir), `${prefix}${entry.name}/`);
    else if (entry.name.endsWith(".ts")) yield `${prefix}${entry.name}`;
  }
}

/** Relative specifiers of every static import/export and dynamic import in a file. */
function specifiers(source: string): string[] {
  const out: string[] = [];
  const re =
    /(?:^|[\s;])(?:import|export)\s[^"';]*?from\s*["']([^"']+)["']|import\s*\(\s*["']([^"']+)["']\s*\)/g;
  for (const m of source.matchAll(re)) {
    const spec = m[1] ?? m[2];
    if (spec.startsWith(".")) out.push(spec);
  }
  return out;
}

/** Folder → folders it imports, with one file that shows each edge. */
function folderGraph(): Map<string, Map<string, string>> {
  const graph = new Map<string, Map<string, string>>();
  for (const rel of walk(LIB)) {
    const from = folderOf(rel), fileUrl = new URL(rel, LIB);
    const edges = graph.get(from) ?? new Map<string, string>();
    graph.set(from, edges);
    for (const spec of specifiers(Deno.readTextFileSync(fileUrl))) {
      const target = new URL(spec, fileUrl).href;
      if (!target.startsWith(LIB.href)) continue;
      const to = folderOf(target.slice(LIB.href.length));
      if (to !== from && !edges.has(to)) edges.set(to, `lib/${rel} imports ${spec}`);
    }
  }
  return graph;
}

/** One cycle as a list of folders (first = last), or undefined. */
function findCycle(graph: Map<string, Map<string, string>>): string[] | undefined {
  const state = new Map<string, "open" | "done">(), stack: string[] = [];
  const visit = (n: string): string[] | undefined => {
    state.set(n, "open");
    stack.push(n);
    for (const m of graph.get(n)?.keys() ?? []) {
      if (state.get(m) === "open") return [...stack.slice(stack.indexOf(m)), m];
      if (!state.has(m)) {
        const c = visit(m);
        if (c) return c;
      }
    }
    stack.pop();
    state.set(n, "done");
    return undefined;
  };
  for (const n of [...graph.keys()].sort()) {
    if (!state.has(n)) {
      const c = visit(n);
      if (c) return c;
    }
  }
  return undefined;
}

Deno.test("specifiers: static, re-export, type-only and dynamic imports", () => {
  const src = `import { a } from "./x.ts";\nimport type { B } from "../routing/result.ts";\n` +
    `export * from "../core/mod.ts";\nconst m = await import("../plots/plot.ts");\nimport "npm:foo";`;
  assert.deepEqual(specifiers(src), ["./x.ts", "../routing/result.ts", "../core/mod.ts", "../plots/plot.ts"]);
});

Deno.test("findCycle finds a two-folder cycle and accepts a DAG", () => {
  const g = (edges: [string, string][]) => {
    const m = new Map<string, Map<string, string>>();
    for (const [a, b] of edges) {
      if (!m.has(a)) m.set(a, new Map());
      if (!m.has(b)) m.set(b, new Map());
      m.get(a)!.set(b, "");
    }
    return m;
  };
  assert.deepEqual(findCycle(g([["routing", "kernels"], ["kernels", "routing"]])), [
    "kernels",
    "routing",
    "kernels",
  ]);
  assert.equal(findCycle(g([["moe", "routing"], ["routing", "core"], ["moe", "core"]])), undefined);
});

Deno.test("lib/ folders import each other without a cycle", () => {
  const graph = folderGraph();
  const cycle = findCycle(graph);
  if (cycle) {
    const why = cycle.slice(0, -1).map((n, i) => graph.get(n)!.get(cycle[i + 1])!);
    assert.fail(`folder import cycle ${cycle.join(" → ")}:\n  ${why.join("\n  ")}`);
  }
});

Deno.test("lib/core imports no other lib/ folder except the npm dependency list", () => {
  const edges = [...(folderGraph().get("core") ?? new Map()).entries()].filter(([to]) => to !== "deps");
  assert.deepEqual(edges, []);
});
