/**
 * Rendering Vega-Lite v5 specs headless: compiled with `vega-lite`, drawn to SVG by `vega`, rasterised
 * to PNG by `@resvg/resvg-js` with a font that is known to exist (resvg draws no text without fonts and
 * does not warn, so a missing font is an error here, with the package to install).
 * @module
 */

import process from "node:process";
import { loadResvg, loadVega } from "../deps.ts";
import { MoekitError } from "../core/errors.ts";

/**
 * Font files tried in order for PNG text (override with MOEKIT_FONT=/path/to/font.ttf).
 *
 * @example
 * ```ts
 * import { FONT_CANDIDATES } from "@moekit/moekit/plots";
 * import assert from "node:assert/strict";
 * assert.equal(FONT_CANDIDATES[0], "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
 * ```
 */
export const FONT_CANDIDATES: readonly string[] = [
  "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
  "/usr/share/fonts/dejavu/DejaVuSans.ttf",
  "/usr/share/fonts/TTF/DejaVuSans.ttf",
  "/usr/local/share/fonts/DejaVuSans.ttf",
  "/Library/Fonts/Arial.ttf",
  "/System/Library/Fonts/Supplemental/Arial.ttf",
  "C:\\Windows\\Fonts\\arial.ttf",
];

/**
 * The font file PNGs are drawn with (`MOEKIT_FONT`, else the first of {@link FONT_CANDIDATES} that
 * exists), or an error saying what to install — or, without read permission, which flag is missing.
 *
 * @example
 * ```ts
 * import { FONT_CANDIDATES, MoekitError, pngFont } from "@moekit/moekit/plots";
 * import assert from "node:assert/strict";
 * try {
 *   assert.ok([Deno.env.get("MOEKIT_FONT"), ...FONT_CANDIDATES].includes(pngFont()));
 * } catch (e) {
 *   assert.ok(e instanceof MoekitError); // no font installed here: the error says what to install
 * }
 * ```
 */
export function pngFont(): string {
  let env: string | undefined;
  if (Deno.permissions.querySync({ name: "env", variable: "MOEKIT_FONT" }).state === "granted") {
    env = Deno.env.get("MOEKIT_FONT");
  }
  let unreadable = 0;
  for (const f of env ? [env, ...FONT_CANDIDATES] : FONT_CANDIDATES) {
    if (Deno.permissions.querySync({ name: "read", path: f }).state !== "granted") {
      unreadable++;
      continue;
    }
    try {
      if (Deno.statSync(f).isFile) return f;
    } catch { /* not there */ }
  }
  if (unreadable > 0) {
    throw new MoekitError(
      `no font for PNG text: reading font files is not allowed; run with --allow-read (PNG output needs ` +
        `${PNG_FLAGS.join(" ")}), or save .svg / .json instead`,
    );
  }
  throw new MoekitError(
    `no font for PNG text: none of ${FONT_CANDIDATES.slice(0, 2).join(", ")} … exists (or is readable). ` +
      `Install DejaVu (apt-get install fonts-dejavu-core) or set MOEKIT_FONT to a .ttf file; SVG and JSON output need no font.`,
  );
}

/** The permission flags PNG output needs: resvg is a native module (ffi, read, sys), fonts are files. */
const PNG_FLAGS = ["--allow-ffi", "--allow-read", "--allow-env", "--allow-sys"] as const;

/**
 * The permission flags that PNG output still needs in this process (empty when PNGs can be drawn, fonts
 * aside): `--allow-ffi`, `--allow-read`, `--allow-sys` for the native rasteriser, `--allow-env` for
 * `MOEKIT_FONT`. SVG and JSON output need none of them.
 *
 * @example
 * ```ts
 * import { pngPermissionsMissing } from "@moekit/moekit/plots";
 * import assert from "node:assert/strict";
 * const missing = pngPermissionsMissing();
 * assert.ok(missing.every((f) => ["--allow-ffi", "--allow-read", "--allow-env", "--allow-sys"].includes(f)));
 * ```
 */
export function pngPermissionsMissing(): string[] {
  const names = {
    "--allow-ffi": "ffi",
    "--allow-read": "read",
    "--allow-env": "env",
    "--allow-sys": "sys",
  } as const;
  return PNG_FLAGS.filter((f) => Deno.permissions.querySync({ name: names[f] }).state !== "granted");
}

let vegaModules: ReturnType<typeof loadVega> | undefined;

/**
 * Vega-Lite and Vega, loaded once. Their `node-fetch` → `whatwg-url` chain requires Node's deprecated
 * `punycode` module; that DeprecationWarning says nothing to a moekit user, so deprecation warnings are
 * muted while these two packages load (and only then).
 */
function vegaOnce(): ReturnType<typeof loadVega> {
  if (!vegaModules) {
    // Node's flag (not in @types/node's Process type): set, deprecation warnings are not printed
    const flags = process as unknown as { noDeprecation?: boolean };
    const before = flags.noDeprecation;
    flags.noDeprecation = true;
    vegaModules = loadVega().finally(() => (flags.noDeprecation = before));
    vegaModules.catch(() => (vegaModules = undefined)); // a failed download may be retried
  }
  return vegaModules;
}

/** Compiles a Vega-Lite v5 spec and renders it to an SVG string. */
export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  const [vl, vega] = await vegaOnce();
  const vgSpec = vl.compile(spec as never).spec;
  const view = new vega.View(vega.parse(vgSpec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Rasterises an SVG to PNG bytes with {@link pngFont}; `scale` multiplies the pixel size. */
export async function renderPng(svg: string, scale = 2): Promise<{ png: Uint8Array; font: string }> {
  const missing = pngPermissionsMissing().filter((f) => f !== "--allow-env"); // env: MOEKIT_FONT only
  if (missing.length) {
    throw new MoekitError(
      `PNG output needs ${missing.join(" ")} (all of ${PNG_FLAGS.join(" ")}, or -A); ` +
        `save .svg / .json instead, which need no permission`,
    );
  }
  const font = pngFont();
  let Resvg: Awaited<ReturnType<typeof loadResvg>>["Resvg"];
  try {
    ({ Resvg } = await loadResvg());
  } catch (e) {
    throw new MoekitError(
      `PNG rendering needs the @resvg/resvg-js native module (${(e as Error).message}); run with ${
        PNG_FLAGS.join(" ")
      } (or -A), or save .svg / .json instead`,
    );
  }
  const png = new Resvg(svg, {
    fitTo: { mode: "zoom", value: scale },
    font: {
      fontFiles: [font],
      loadSystemFonts: false,
      defaultFontFamily: "DejaVu Sans",
      sansSerifFamily: "DejaVu Sans",
    },
  }).render().asPng();
  return { png: new Uint8Array(png), font };
}
