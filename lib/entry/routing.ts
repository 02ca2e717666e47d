/**
 * The `@moekit/moekit/routing` entry point: the routing API (lib/routing) with the compute backends
 * registered (lib/kernels: WebAssembly, and native BLAS where available), so routers imported from this
 * sub-path run on the same kernels as the root module (and `kernelInfo`, `useThreads`, token buffers come along). (lib/routing itself cannot import the kernels:
 * they implement its interfaces.)
 * @module
 */

export * from "../kernels/mod.ts";
export * from "../routing/mod.ts";
