/**
 * Builds moekit's own native gate kernel (`gate.c`) for this machine with the system C compiler
 * (`cc -O3 -march=native`, or `CC`) into the cache folder that `gate.ts` loads it from. Run:
 * `deno task build:native` in a checkout (or run this file with `--allow-read --allow-write --allow-env
 * --allow-run`, plus `--allow-net` when it is imported from a URL). Nothing else builds it: importing
 * moekit never compiles or downloads code. The library is built for this CPU (`-march=native`);
 * `MOEKIT_NATIVE_MARCH` names another target (e.g. `x86-64-v3` for the AVX2 build, `x86-64` for the generic
 * one, to test those paths on an AVX-512 machine).
 * The library is written to a temporary file and renamed into place, so a failed build leaves any
 * previous one intact.
 * @module
 */

import { gateCacheDir, gateLibraryName } from "./gate.ts";

if (import.meta.main) {
  const dir = gateCacheDir();
  if (!dir) {
    console.error("build:native: no cache folder: set MOEKIT_NATIVE_DIR or HOME (and grant --allow-env)");
    Deno.exit(2);
  }
  const cc = Deno.env.get("CC") ?? "cc";
  await Deno.mkdir(dir, { recursive: true });
  const target = `${dir}/${gateLibraryName()}`, tmp = `${target}.${Deno.pid}.tmp`;
  // the source next to this script, from a checkout or from the published package alike
  const src = `${tmp}.c`;
  await Deno.writeTextFile(src, await (await fetch(new URL("./gate.c", import.meta.url))).text());
  const march = Deno.env.get("MOEKIT_NATIVE_MARCH") || "native";
  const args = ["-O3", `-march=${march}`, "-shared", "-fPIC", "-o", tmp, src];
  console.log(`${cc} ${args.join(" ")}`);
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(cc, { args, stdout: "inherit", stderr: "inherit" }).output();
  } catch (e) {
    await Deno.remove(src).catch(() => {});
    console.error(`build:native: cannot run ${cc}: ${(e as Error).message} (install a C compiler or set CC)`);
    Deno.exit(2);
  }
  await Deno.remove(src).catch(() => {});
  if (!out.success) {
    await Deno.remove(tmp).catch(() => {});
    console.error(
      `build:native: ${cc} failed (exit ${out.code}); the previous library, if any, is unchanged`,
    );
    Deno.exit(1);
  }
  await Deno.rename(tmp, target);
  // the loader finds the library through the first of these variables that is granted and set
  const from = ["MOEKIT_NATIVE_DIR", "XDG_CACHE_HOME", "HOME", "USERPROFILE"].find((v) => Deno.env.get(v));
  console.log(`built ${target}`);
  console.log(
    `use it with: deno run --allow-ffi --allow-env=${from ?? "HOME"} … (the native backend then reports ` +
      `"moekit's native gate kernel" in kernelInfo())`,
  );
}
