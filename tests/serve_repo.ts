/**
 * Serves the repository over HTTP on 127.0.0.1 with `.ts` sent as TypeScript, so that Deno (a script, or
 * the Jupyter kernel of `examples/notebook.ipynb`) can import moekit from a URL. Used by the URL-import
 * and notebook tests (a random port) and by `deno task serve` (port 8000, or `--port N`):
 *
 *   deno task serve                      # http://127.0.0.1:8000/mod.ts
 *   deno run --allow-import=127.0.0.1:8000 my_script.ts   # a script importing that URL
 *
 * (`python3 -m http.server` sends `.ts` as `video/mp2t`, which Deno refuses as a syntax error.)
 */
import { parseArgs } from "node:util";

const root = new URL("..", import.meta.url);

const TYPES: Record<string, string> = {
  ts: "application/typescript",
  js: "application/javascript",
  json: "application/json",
  md: "text/markdown",
};

/** Starts a static file server over the repo; returns its base URL and a shutdown function. */
export function serveRepo(port = 0): { url: string; close: () => Promise<void> } {
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path.includes("..")) return new Response("bad path", { status: 400 });
    try {
      const body = await Deno.readFile(new URL(`.${path}`, root));
      return new Response(body, {
        headers: { "content-type": TYPES[path.split(".").pop()!] ?? "application/octet-stream" },
      });
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const addr = server.addr as Deno.NetAddr;
  return { url: `http://127.0.0.1:${addr.port}`, close: () => server.shutdown() };
}

if (import.meta.main) {
  const usage =
    "usage: deno task serve [--port N]   (serves this checkout on http://127.0.0.1:N, default 8000)";
  let port = 8000;
  try {
    const v = parseArgs({
      args: Deno.args,
      strict: true,
      options: { port: { type: "string" }, help: { type: "boolean" } },
    }).values;
    if (v.help) {
      console.log(usage);
      Deno.exit(0);
    }
    if (v.port !== undefined) {
      port = Number(v.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new Error(`--port must be an integer in 1..65535, got "${v.port}"`);
      }
    }
  } catch (e) {
    console.error(`error: ${(e as Error).message}\n${usage}`);
    Deno.exit(2);
  }
  let url: string;
  try {
    ({ url } = serveRepo(port));
  } catch (e) {
    if (!(e instanceof Deno.errors.AddrInUse)) throw e;
    console.error(`error: port ${port} is in use; pick another with --port N`);
    Deno.exit(1);
  }
  console.log(`serving ${new URL(".", root).pathname} at ${url}/ (Ctrl-C stops)
  in the notebook (Deno kernel):  const mk = await import("${url}/mod.ts");
  in a script:                    deno run --allow-import=127.0.0.1:${port} your_script.ts`);
}
