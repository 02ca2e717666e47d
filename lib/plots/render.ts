/**
 * Rendering Vega-Lite v5 specs headless: compiled with `vega-lite`, drawn to SVG by `vega`, rasterised
 * to PNG by `@resvg/resvg-js` with a font that is known to exist (resvg draws no text without fonts and
 * does not warn, so a missing font is an error here, with the package to install).
 * @module
 */

import { loadResvg, loadVega } from "../deps.ts";
import { MoekitError } from "../core/errors.ts";

/**
 * Font files tried in order for PNG text (override with MOEKIT_FONT=/path/to/font.ttf).
 *
 * @example
 * ```ts
 * import { FONT_CANDIDATES } from "@moekit/moekit";
 * console.log(FONT_CANDIDATES[0]); // /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
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
 * The font file PNGs are drawn with, or an error saying what to install.
 *
 * @example
 * ```ts
 * import { pngFont } from "@moekit/moekit";
 * console.log(pngFont().endsWith(".ttf")); // true (where DejaVu is installed)
 * ```
 */
export function pngFont(): string {
  let env: string | undefined;
  try {
    env = Deno.env.get("MOEKIT_FONT");
  } catch { /* no env permission */ }
  for (const f of env ? [env, ...FONT_CANDIDATES] : FONT_CANDIDATES) {
    try {
      if (Deno.statSync(f).isFile) return f;
    } catch { /* not there, or no read permission */ }
  }
  throw new MoekitError(
    `no font for PNG text: none of ${FONT_CANDIDATES.slice(0, 2).join(", ")} … exists (or is readable). ` +
      `Install DejaVu (apt-get install fonts-dejavu-core) or set MOEKIT_FONT to a .ttf file; SVG and JSON output need no font.`,
  );
}

/** Compiles a Vega-Lite v5 spec and renders it to an SVG string. */
export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  const [vl, vega] = await loadVega();
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
  const font = pngFont();
  let Resvg: Awaited<ReturnType<typeof loadResvg>>["Resvg"];
  try {
    ({ Resvg } = await loadResvg());
  } catch (e) {
    throw new MoekitError(
      `PNG rendering needs the @resvg/resvg-js native module (${
        (e as Error).message
      }); allow it with --allow-ffi (and --allow-read, --allow-env), or save .svg / .json instead`,
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
