/**
 * JSON readers for safetensors headers. `parseStrictJson` reads the raw bytes itself: every problem is
 * reported with the rule it breaks and its byte offset; it rejects invalid UTF-8, lone surrogate escapes,
 * duplicate keys and nesting deeper than a small limit as soon as it meets them (so a header nested
 * millions deep is rejected after a few dozen bytes), keeps the written form of numbers so that `2.0` or
 * `2e0` can be told from `2`, and records where every value is. `parseFastJson` is the fast path for
 * ordinary headers: a byte scan that finds anything unusual (escapes of `\u`, numbers other than plain
 * digits, deep nesting, duplicate keys), then the native `JSON.parse`; it gives up (returns undefined) on
 * anything unusual, and the strict reader decides. Internal to `lib/io`.
 * @module
 */

/**
 * A number not written as plain digits (`2.0`, `2e0`, `-1`, or more than 15 digits): its written form
 * (cut to 40 characters), its value, and whether it was written as an integer (no fraction or exponent).
 */
export class Written {
  /** Creates the number. */
  constructor(readonly text: string, readonly value: number, readonly integer: boolean) {}
}

/**
 * Plain JSON values as `JSON.parse` gives them (objects without a prototype), except numbers not written
 * as plain digits, which are {@link Written}; with `at(container, key)` giving the byte offset of a member
 * (or of the container itself without a key).
 */
export interface Located {
  /** The value. */
  readonly root: unknown;
  /** Byte offset of `container[key]` (or of `container`), when known. */
  at(container: object, key?: string | number): number | undefined;
}

/** A problem found while reading: the rule, the byte offset and a description. */
export class JsonProblem {
  /** Creates the problem. */
  constructor(readonly rule: string, readonly offset: number, readonly problem: string) {}
}

const fatal = new TextDecoder("utf-8", { fatal: true }), lenient = new TextDecoder("utf-8");

/**
 * Parses `bytes[from, to)` as one JSON value followed only by whitespace. `base` is added to every
 * reported offset (the position of `bytes[0]` in the file). Throws a {@link JsonProblem}.
 */
export function parseStrictJson(
  bytes: Uint8Array,
  base: number,
  maxDepth: number,
): Located {
  // UTF-8 first (fast, native); locate the first bad sequence only when there is one
  let whole: string;
  try {
    whole = fatal.decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    throw new JsonProblem("utf8", base + at, `invalid UTF-8 at byte ${base + at}`);
  }
  let i = 0;
  const n = bytes.length;
  // all ASCII (the common case): byte offsets are character offsets, so strings are slices of `whole`
  const ascii = whole.length === n;
  const latin1 = (from: number, to: number) =>
    ascii ? whole.slice(from, to) : String.fromCharCode(...bytes.subarray(from, to));
  const fail = (rule: string, at: number, problem: string): never => {
    throw new JsonProblem(rule, base + at, problem);
  };
  const ws = () => {
    while (i < n) {
      const c = bytes[i];
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
  };
  const describeByte = (at: number) =>
    at >= n
      ? "the end of the header"
      : bytes[at] >= 0x20 && bytes[at] < 0x7f
      ? `'${String.fromCharCode(bytes[at])}'`
      : `byte 0x${bytes[at].toString(16).padStart(2, "0")}`;
  const expected = (what: string): never =>
    fail("json", i, `invalid JSON at byte ${base + i}: expected ${what}, found ${describeByte(i)}`);

  const hex4 = (at: number): number => {
    let v = 0;
    for (let k = 0; k < 4; k++) {
      const c = bytes[at + k];
      const d = c >= 0x30 && c <= 0x39
        ? c - 0x30
        : c >= 0x61 && c <= 0x66
        ? c - 0x57
        : c >= 0x41 && c <= 0x46
        ? c - 0x37
        : -1;
      if (d < 0 || at + k >= n) {
        fail("json", at + k, `invalid JSON at byte ${base + at + k}: \\u needs 4 hex digits`);
      }
      v = v * 16 + d;
    }
    return v;
  };

  const string = (): string => {
    const start = i++; // opening quote
    let escaped = false;
    let j = i;
    for (; j < n; j++) {
      const c = bytes[j];
      if (c === 0x22) break;
      if (c === 0x5c) {
        escaped = true;
        break;
      }
      if (c < 0x20) {
        fail(
          "json",
          j,
          `invalid JSON at byte ${base + j}: control character 0x${c.toString(16)} in a string`,
        );
      }
    }
    if (j >= n) fail("json", start, `invalid JSON: string starting at byte ${base + start} is not closed`);
    if (!escaped) {
      i = j + 1;
      return ascii ? whole.slice(start + 1, j) : lenient.decode(bytes.subarray(start + 1, j));
    }
    // with escapes: decode piece by piece
    const parts: string[] = [];
    let runStart = start + 1;
    i = start + 1;
    while (true) {
      if (i >= n) fail("json", start, `invalid JSON: string starting at byte ${base + start} is not closed`);
      const c = bytes[i];
      if (c === 0x22) {
        parts.push(lenient.decode(bytes.subarray(runStart, i)));
        i++;
        return parts.join("");
      }
      if (c < 0x20) {
        fail(
          "json",
          i,
          `invalid JSON at byte ${base + i}: control character 0x${c.toString(16)} in a string`,
        );
      }
      if (c !== 0x5c) {
        i++;
        continue;
      }
      parts.push(lenient.decode(bytes.subarray(runStart, i)));
      const e = bytes[i + 1];
      const simple: Record<number, string> = {
        0x22: '"',
        0x5c: "\\",
        0x2f: "/",
        0x62: "\b",
        0x66: "\f",
        0x6e: "\n",
        0x72: "\r",
        0x74: "\t",
      };
      if (e !== undefined && simple[e] !== undefined) {
        parts.push(simple[e]);
        i += 2;
      } else if (e === 0x75) {
        const u = hex4(i + 2);
        if (u >= 0xdc00 && u <= 0xdfff) {
          fail("surrogate", i, `lone low surrogate \\u${u.toString(16)} at byte ${base + i}`);
        }
        if (u >= 0xd800 && u <= 0xdbff) {
          const lo = bytes[i + 6] === 0x5c && bytes[i + 7] === 0x75 ? hex4(i + 8) : -1;
          if (!(lo >= 0xdc00 && lo <= 0xdfff)) {
            fail(
              "surrogate",
              i,
              `lone high surrogate \\u${u.toString(16)} at byte ${
                base + i
              } (not followed by a low surrogate)`,
            );
          }
          parts.push(String.fromCharCode(u, lo));
          i += 12;
        } else {
          parts.push(String.fromCharCode(u));
          i += 6;
        }
      } else {
        fail(
          "json",
          i,
          `invalid JSON at byte ${base + i}: unknown escape \\${e === undefined ? "" : describeByte(i + 1)}`,
        );
      }
      runStart = i;
    }
  };

  const number = (): number | Written => {
    const start = i;
    let integer = true;
    if (bytes[i] === 0x2d) i++;
    const digits = () => {
      const s = i;
      while (i < n && bytes[i] >= 0x30 && bytes[i] <= 0x39) i++;
      return i - s;
    };
    if (bytes[i] === 0x30) i++;
    else if (digits() === 0) expected("a digit");
    if (bytes[i] === 0x2e) {
      integer = false;
      i++;
      if (digits() === 0) expected("a digit after '.'");
    }
    if (bytes[i] === 0x65 || bytes[i] === 0x45) {
      integer = false;
      i++;
      if (bytes[i] === 0x2b || bytes[i] === 0x2d) i++;
      if (digits() === 0) expected("a digit in the exponent");
    }
    const len = i - start;
    if (integer && bytes[start] !== 0x2d && len <= 15) {
      let v = 0; // plain digits, the common case
      for (let k = start; k < i; k++) v = v * 10 + (bytes[k] - 0x30);
      return v;
    }
    const full = latin1(start, Math.min(i, start + 400));
    const text = len > 40 ? `${full.slice(0, 40)}… (${len - 40} more characters cut)` : full;
    return new Written(text, len > 400 ? (integer ? Infinity : Number.NaN) : Number(full), integer);
  };

  const literal = (word: string, value: boolean | null): boolean | null => {
    for (let k = 0; k < word.length; k++) {
      if (bytes[i + k] !== word.charCodeAt(k)) {
        i += k;
        expected(`'${word}'`);
      }
    }
    i += word.length;
    return value;
  };

  const selfAt = new Map<object, number>(), memberAt = new Map<object, Map<string | number, number>>();
  // At a container's opening byte: records where it and its members stand; true when it is empty (past
  // `close`).
  const open = (container: object, members: Map<string | number, number>, close: number): boolean => {
    selfAt.set(container, base + i++);
    memberAt.set(container, members);
    ws();
    if (bytes[i] !== close) return false;
    i++;
    return true;
  };
  // After a member: true past a ',' (another member follows), false past `close` (the container ends).
  const more = (close: number, what: string): boolean => {
    ws();
    if (bytes[i] === 0x2c || bytes[i] === close) return bytes[i++] === 0x2c;
    return expected(what);
  };

  const value = (depth: number): unknown => {
    ws();
    if (i >= n) expected("a value");
    const c = bytes[i];
    if (c === 0x7b || c === 0x5b) {
      if (depth >= maxDepth) {
        fail("nesting", i, `nesting deeper than ${maxDepth} levels at byte ${base + i}`);
      }
    }
    if (c === 0x7b) {
      const obj: Record<string, unknown> = Object.create(null), members = new Map<string, number>();
      if (open(obj, members, 0x7d)) return obj;
      while (true) {
        ws();
        if (bytes[i] !== 0x22) expected("a string key");
        const keyAt = i, key = string();
        if (Object.hasOwn(obj, key)) {
          fail("duplicate-key", keyAt, `duplicate key ${JSON.stringify(cut(key))} at byte ${base + keyAt}`);
        }
        ws();
        if (bytes[i] !== 0x3a) expected("':'");
        i++;
        ws();
        members.set(key, base + i);
        obj[key] = value(depth + 1);
        if (!more(0x7d, "',' or '}'")) return obj;
      }
    }
    if (c === 0x5b) {
      const items: unknown[] = [], members = new Map<number, number>();
      if (open(items, members, 0x5d)) return items;
      while (true) {
        ws();
        members.set(items.length, base + i);
        items.push(value(depth + 1));
        if (!more(0x5d, "',' or ']'")) return items;
      }
    }
    if (c === 0x22) return string();
    if (c === 0x2d || (c >= 0x30 && c <= 0x39)) return number();
    if (c === 0x74) return literal("true", true);
    if (c === 0x66) return literal("false", false);
    if (c === 0x6e) return literal("null", null);
    return expected("a value");
  };

  const root = value(0);
  ws();
  if (i < n) {
    fail(
      "json",
      i,
      `invalid JSON at byte ${base + i}: ${describeByte(i)} after the end of the header object`,
    );
  }
  return {
    root,
    at: (container, key) => key === undefined ? selfAt.get(container) : memberAt.get(container)?.get(key),
  };
}

/**
 * The fast path: the header as `JSON.parse` reads it, or undefined when the strict reader must decide —
 * invalid UTF-8 or JSON, an escaped `\u`, a number that is not plain digits, nesting deeper than
 * `maxDepth`, or a duplicate key (the scan counts keys; `JSON.parse` keeps one of two equal keys).
 */
export function parseFastJson(bytes: Uint8Array, maxDepth: number): unknown {
  let keys = 0, depth = 0;
  const n = bytes.length;
  for (let i = 0; i < n; i++) {
    const c = bytes[i];
    if (c === 0x22) {
      for (i++; i < n; i++) {
        const d = bytes[i];
        if (d === 0x22) break;
        if (d === 0x5c) {
          if (bytes[i + 1] === 0x75) return undefined;
          i++;
        }
      }
    } else if (c === 0x7b || c === 0x5b) {
      if (++depth > maxDepth) return undefined;
    } else if (c === 0x7d || c === 0x5d) depth--;
    else if (c === 0x3a) keys++;
    else if (c === 0x2d) return undefined;
    else if (c >= 0x30 && c <= 0x39) {
      let len = 0;
      while (i < n && bytes[i] >= 0x30 && bytes[i] <= 0x39) i++, len++;
      const d = bytes[i];
      if (d === 0x2e || d === 0x65 || d === 0x45 || len > 15) return undefined;
      i--;
    }
  }
  let root: unknown;
  try {
    root = JSON.parse(fatal.decode(bytes));
  } catch {
    return undefined;
  }
  return countKeys(root) === keys ? root : undefined;
}

function countKeys(v: unknown): number {
  if (v === null || typeof v !== "object") return 0;
  let k = 0;
  if (Array.isArray(v)) { for (const x of v) k += countKeys(x); }
  else for (const key in v) k += 1 + countKeys((v as Record<string, unknown>)[key]);
  return k;
}

/** A key or string from a file for a message: at most 80 characters, saying how much was cut. */
export function cut(s: string, max = 80): string {
  return s.length <= max ? s : `${s.slice(0, max)}… (${s.length - max} more characters cut)`;
}

/** A short, bounded description of a value for a message (`[2, 3]`, `"F32"`, `an object of 3 keys`). */
export function describe(v: unknown): string {
  if (v instanceof Written) return v.text;
  if (typeof v === "string") return JSON.stringify(cut(v, 40));
  if (Array.isArray(v)) {
    const shown = v.slice(0, 8).map((
      x,
    ) => (x !== null && typeof x === "object" && !(x instanceof Written)
      ? (Array.isArray(x) ? "a list" : "an object")
      : describe(x))
    );
    return `[${shown.join(", ")}${v.length > 8 ? `, … ${v.length - 8} more` : ""}]`;
  }
  if (v !== null && typeof v === "object") return `an object of ${Object.keys(v).length} keys`;
  return String(v);
}

/** Offset of the first byte that is not part of a valid UTF-8 sequence. */
function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    let need: number, min: number;
    if (c >= 0xc2 && c <= 0xdf) [need, min] = [1, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [need, min] = [2, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [need, min] = [3, 0x10000];
    else return i;
    let cp = c & (0x3f >> need);
    for (let k = 1; k <= need; k++) {
      const d = b[i + k];
      if (d === undefined || (d & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (d & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
    i += need + 1;
  }
  return b.length;
}
