/**
 * Runs a Python peer script (numpy / SciPy) pinned to `threads` BLAS threads and parses the JSON it prints
 * on stdout; a failing script throws an Error whose message is the last line of its stderr. The thread
 * variables are set before Python starts, since numpy's OpenBLAS reads them only when it loads.
 */
export async function runPythonPeer(python: string, args: string[], threads: number): Promise<unknown> {
  const n = String(threads);
  const out = await new Deno.Command(python, {
    args,
    env: { OPENBLAS_NUM_THREADS: n, OMP_NUM_THREADS: n, MKL_NUM_THREADS: n },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr).trim().split("\n").pop());
  return JSON.parse(new TextDecoder().decode(out.stdout));
}
