/**
 * moekit ÷ the best peer, paired tightly and repeated: every round runs, for each shape and thread count,
 * the peer kit on that shape alone and then moekit on it (`bench/peers.ts --run-peers --json`), so each
 * ratio compares two measurements taken seconds apart. On a shared or noisy VM a peer's own rate moves by
 * up to a third between sittings, which a single sitting's ratio cannot tell from a real difference; the
 * median over rounds (and the spread) can.
 *
 *   deno task bench:rounds                                # 3 rounds, the four shapes, 1 and 2 threads, native
 *   deno task bench:rounds --rounds 5 --threads 1 switch-base deepseek-v3
 *   deno task bench:rounds --backend wasm
 *
 * "best peer" is the issue's yardstick: the faster of PyTorch (either wait policy) and onnxruntime at the
 * same thread count. `foreign` is the CPU other processes used during moekit's timed calls (the largest
 * of the round's); rounds over 0.3 are marked `*`.
 */

import { parseArgs } from "node:util";

const args = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    rounds: { type: "string", default: "3" },
    threads: { type: "string", default: "1,2" },
    backend: { type: "string", default: "native" },
    help: { type: "boolean", short: "h" },
  },
});
const USAGE = "usage: deno task bench:rounds [--rounds 3] [--threads 1,2] [--backend native] [shape ...]";
if (args.values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const rounds = Number(args.values.rounds);
const threads = args.values.threads!.split(",").map(Number);
const backend = args.values.backend!;
if (!Number.isInteger(rounds) || rounds < 1 || !threads.every((t) => Number.isInteger(t) && t >= 1)) {
  console.error(`error: --rounds and --threads take integers ≥ 1\n${USAGE}`);
  Deno.exit(2);
}
if (!["native", "wasm", "js", "auto"].includes(backend)) {
  console.error(`error: --backend must be one of native, wasm, js, auto (got "${backend}")`);
  Deno.exit(2);
}
const shapes = args.positionals.length
  ? args.positionals
  : ["mixtral", "olmoe", "deepseek-v3", "switch-base"];
const peersScript = new URL("./peers.ts", import.meta.url).pathname;

interface Row {
  moekit: Record<string, number>;
  foreign: number;
  peers: Record<string, Record<string, number>>;
}

/** One pairing: the peers on `shape` at `t` threads, then moekit; the JSON row `bench/peers.ts` prints. */
async function pair(shape: string, t: number): Promise<Row> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      peersScript,
      "--run-peers",
      "--json",
      "--threads",
      String(t),
      "--backend",
      backend,
      shape,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const json = text.split("\n").reverse().find((l) => l.startsWith("{"));
  if (!out.success || !json) {
    console.error(text);
    throw new Error(`bench/peers.ts failed on ${shape} at ${t} threads (exit ${out.code})`);
  }
  return (JSON.parse(json) as { rows: Row[] }).rows[0];
}

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const results = new Map<
  string,
  { ratio: number; ours: number; best: number; who: string; foreign: number }[]
>();
const start = Date.now();
for (let r = 0; r < rounds; r++) {
  for (const shape of shapes) {
    for (const t of threads) {
      const row = await pair(shape, t);
      const ours = row.moekit[t];
      let best = 0, who = "-";
      for (const p of ["torch", "torch-passive", "ort"]) {
        const v = row.peers[p]?.[t] ?? 0;
        if (v > best) [best, who] = [v, p];
      }
      const key = `${shape}|${t}`;
      if (!results.has(key)) results.set(key, []);
      results.get(key)!.push({ ratio: best ? ours / best : NaN, ours, best, who, foreign: row.foreign });
      console.error(
        `round ${r + 1}/${rounds} ${shape} ${t}T: moekit ${ours.toFixed(0)} tok/s, ${who} ${
          best.toFixed(0)
        } → ${(ours / best).toFixed(2)}x (foreign ${row.foreign})`,
      );
    }
  }
}

console.log(
  `moekit (${backend}) ÷ best peer, ${rounds} paired rounds, ${
    ((Date.now() - start) / 60000).toFixed(1)
  } min`,
);
console.log("shape         threads   median   min–max       per round");
for (const [key, v] of results) {
  const [shape, t] = key.split("|");
  const ratios = v.map((x) => x.ratio);
  console.log(
    `${shape.padEnd(13)} ${`${t}T`.padEnd(8)} ${median(ratios).toFixed(2).padStart(6)}x  ${
      Math.min(...ratios).toFixed(2)
    }–${Math.max(...ratios).toFixed(2)}x   ${
      v.map((x) => `${x.ratio.toFixed(2)}${x.foreign > 0.3 ? "*" : ""} (${x.who})`).join(", ")
    }`,
  );
}
