/**
 * The files of a Hugging Face model folder besides the weights: `config.json` (copied with `torch_dtype`
 * set to the output dtype) and the tokenizer files (copied as they are, optionally with a chat
 * template), plus a vocabulary fingerprint to tell whether two models share one vocabulary.
 * @module
 */

import type { ExtraFile } from "./checkpoint.ts";
import type { Dtype } from "./dtype.ts";
import { CheckpointError, clip } from "./errors.ts";

/** The tokenizer files `transformers` reads from a model folder. */
export const TOKENIZER_FILES: readonly string[] = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "added_tokens.json",
  "tokenizer.model",
  "spiece.model",
  "sentencepiece.bpe.model",
  "vocab.json",
  "vocab.txt",
  "merges.txt",
  "chat_template.jinja",
  "chat_template.json",
];

const TORCH_DTYPE: Partial<Record<Dtype, string>> = {
  F16: "float16",
  BF16: "bfloat16",
  F32: "float32",
  F64: "float64",
};

/**
 * `value` as JSON text with a 2-space indent and a final newline, writing every number that `original`
 * (the JSON text `value` was derived from) holds at the same place with the same value exactly as
 * `original` wrote it — `1e-05` stays `1e-05`, `10000.0` stays `10000.0` (which Python reads back as a
 * float, not an int) — so a rewritten `config.json` differs from its source only where a value changed.
 * New or changed numbers are written as `JSON.stringify` writes them. An `original` that is not valid
 * JSON is ignored.
 *
 * @example
 * ```ts
 * import { jsonLike } from "@moekit/moekit/io";
 * import assert from "node:assert/strict";
 * const original = '{"rms_norm_eps": 1e-05, "rope_theta": 10000.0, "torch_dtype": "float32", "n": 2}';
 * const edited = { ...JSON.parse(original), torch_dtype: "bfloat16", n: 3 };
 * const text = jsonLike(edited, original);
 * assert.match(text, /"rms_norm_eps": 1e-05,/);
 * assert.match(text, /"rope_theta": 10000.0,/);
 * assert.match(text, /"n": 3\n/);
 * assert.deepEqual(JSON.parse(text), edited);
 * ```
 */
export function jsonLike(value: unknown, original?: string): string {
  type Raw = { readonly rawJSON: string };
  const J = JSON as unknown as {
    rawJSON?: (text: string) => Raw;
    parse(
      text: string,
      reviver: (key: string, value: unknown, context: { source?: string }) => unknown,
    ): unknown;
  };
  let source: unknown;
  if (original !== undefined && J.rawJSON) {
    try {
      source = J.parse(
        original,
        (_k, v, ctx) => (typeof v === "number" && ctx?.source ? J.rawJSON!(ctx.source) : v),
      );
    } catch {
      source = undefined;
    }
  }
  const isObject = (v: unknown): v is Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v);
  const keep = (v: unknown, src: unknown): unknown => {
    if (typeof v === "number") {
      const raw = src as Raw | undefined;
      return raw && typeof raw === "object" && typeof raw.rawJSON === "string" &&
          Object.is(Number(raw.rawJSON), v)
        ? raw
        : v;
    }
    if (Array.isArray(v)) return v.map((x, i) => keep(x, Array.isArray(src) ? src[i] : undefined));
    if (isObject(v)) {
      const out: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) out[k] = keep(x, isObject(src) ? src[k] : undefined);
      return out;
    }
    return v;
  };
  return JSON.stringify(source === undefined ? value : keep(value, source), null, 2) + "\n";
}

async function readJson(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new CheckpointError(path, `cannot read (${(e as Error).message})`);
  }
  try {
    const v = JSON.parse(text);
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not a JSON object");
    return v;
  } catch (e) {
    throw new CheckpointError(path, `is not a JSON object (${clip((e as Error).message, 200)})`);
  }
}

/**
 * `config.json` of a model folder for a derived model: `torch_dtype` (and `dtype`, when present) set to
 * the output dtype, `num_hidden_layers` to the output's layer count when given. Undefined when the folder
 * has no `config.json`.
 */
export async function derivedModelConfig(
  folder: string,
  change: { readonly dtype?: Dtype; readonly layers?: number },
): Promise<ExtraFile | undefined> {
  const config = await readJson(`${folder}/config.json`);
  if (!config) return undefined;
  const original = await Deno.readTextFile(`${folder}/config.json`);
  const name = change.dtype ? TORCH_DTYPE[change.dtype] : undefined;
  if (name) {
    config.torch_dtype = name;
    if ("dtype" in config) config.dtype = name;
  }
  if (change.layers !== undefined && typeof config.num_hidden_layers === "number") {
    config.num_hidden_layers = change.layers;
  }
  return { name: "config.json", data: jsonLike(config, original) };
}

/**
 * The tokenizer files of a model folder, to copy; with `chatTemplate`, the template is written into
 * `chat_template.jinja` when the folder has one, else into `tokenizer_config.json`.
 */
export async function tokenizerFiles(folder: string, chatTemplate?: string): Promise<ExtraFile[]> {
  const present: string[] = [];
  for (const f of TOKENIZER_FILES) {
    if (await Deno.stat(`${folder}/${f}`).then((s) => s.isFile, () => false)) present.push(f);
  }
  const out: ExtraFile[] = [];
  for (const f of present) {
    if (chatTemplate !== undefined && f === "chat_template.jinja") {
      out.push({ name: f, data: chatTemplate });
    } else if (
      chatTemplate !== undefined && f === "tokenizer_config.json" && !present.includes("chat_template.jinja")
    ) {
      const cfg = (await readJson(`${folder}/${f}`))!;
      cfg.chat_template = chatTemplate;
      out.push({ name: f, data: JSON.stringify(cfg, null, 2) + "\n" });
    } else out.push({ name: f, copyFrom: `${folder}/${f}` });
  }
  if (
    chatTemplate !== undefined && !present.includes("chat_template.jinja") &&
    !present.includes("tokenizer_config.json")
  ) {
    out.push({
      name: "tokenizer_config.json",
      data: JSON.stringify({ chat_template: chatTemplate }, null, 2) + "\n",
    });
  }
  return out;
}

/** The chat template a model folder declares (`chat_template.jinja` or `tokenizer_config.json`), if any. */
export async function chatTemplateOf(folder: string): Promise<string | undefined> {
  const jinja = await Deno.readTextFile(`${folder}/chat_template.jinja`).catch(() => undefined);
  if (jinja !== undefined) return jinja;
  const t = (await readJson(`${folder}/tokenizer_config.json`))?.chat_template;
  return typeof t === "string" ? t : undefined;
}

/**
 * A fingerprint of a model folder's vocabulary, to compare two models: the tokens and ids of
 * `tokenizer.json` (vocabulary and added tokens), else `vocab.json`, else `vocab_size` from `config.json`.
 * Fingerprints of different kinds cannot be compared. Undefined when the folder says nothing.
 */
export async function vocabularyFingerprint(
  folder: string,
): Promise<{ readonly kind: string; readonly value: string } | undefined> {
  const tok = await readJson(`${folder}/tokenizer.json`);
  if (tok) {
    const model = tok.model as { vocab?: unknown } | undefined;
    const added = Array.isArray(tok.added_tokens)
      ? (tok.added_tokens as { id?: unknown; content?: unknown }[]).map((t) => [t.id, t.content])
      : [];
    return { kind: "tokenizer.json", value: await digest(JSON.stringify([model?.vocab ?? null, added])) };
  }
  const vocab = await Deno.readTextFile(`${folder}/vocab.json`).catch(() => undefined);
  if (vocab !== undefined) return { kind: "vocab.json", value: await digest(vocab) };
  const size = (await readJson(`${folder}/config.json`))?.vocab_size;
  return typeof size === "number" ? { kind: "vocab_size", value: String(size) } : undefined;
}

async function digest(text: string): Promise<string> {
  const h = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(h), (b) => b.toString(16).padStart(2, "0")).join("");
}
