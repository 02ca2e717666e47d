/*
 * moekit's own native gate kernel: router logits out[t, e] = sum_p x[t, p] * w[e, p] (X times W
 * transposed, nn.Linear layout), for the shapes of MoE gates (E from 8 to a few hundred, d up to 8k).
 *
 * Built only by `deno task build:native` with the system C compiler (-O3 -march=native), into a cache
 * folder; loaded by lib/kernels/native/gate.ts through Deno.dlopen when present. Plain C with GCC/Clang
 * vector extensions (GCC 12+ or Clang), so the same source compiles to AVX-512, AVX2 or NEON; no intrinsics.
 *
 * Layout: the gate weight is packed once per router (moekit_gate_pack) in groups of NE experts; inside a
 * group, chunks of VL floats along d, the NE experts' chunks next to each other (d is zero-padded to a
 * multiple of VL, E to a multiple of NE). The kernel keeps MR tokens x NE experts of VL-lane
 * accumulators in registers (3 x 8 zmm with AVX-512) over a run of chunks, and reduces them to NE sums
 * per token at its end. X is read in place (row-major, any d), so nothing is copied per call.
 *
 * Cache blocking (moekit_gate_logits), sized at run time from this CPU's L1 data and L2 cache sizes
 * (sysconf on Linux; 32 KiB and 1 MiB where unknown): d goes in K blocks of up to half of L1 of a group's
 * packed weight, which stays in L1 while every micro block of a token block uses it (with AVX-512 the
 * 8 weight vectors of every 24 FMAs would otherwise come from L2 or L3), and tokens in blocks whose K block
 * of X fills up to half of L2, where it stays while every group uses it. Each K block's sums are added to
 * the output, so a logit's summation order depends on d and the cache sizes only, not on T or on the
 * thread: the same bits for one token alone or in any batch, on one thread or several.
 */
#include <stddef.h>
#include <string.h>
#if defined(__linux__)
#include <unistd.h>
#endif

#define MOEKIT_GATE_VERSION 1

#if defined(__AVX512F__)
#define VL 16
#define NE 8
#define MR 3
#define ISA "avx512"
#elif defined(__AVX2__) || defined(__AVX__)
#define VL 8
#define NE 4
#define MR 3
#define ISA "avx2"
#else
#define VL 4
#define NE 4
#define MR 2
#define ISA "generic"
#endif

typedef float vf __attribute__((vector_size(VL * 4)));

/* An empty asm that makes the compiler keep v in a vector register (rather than fold its load into
 * every use as a memory operand). */
#if defined(__x86_64__) || defined(__i386__)
#define KEEP_IN_REGISTER(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define KEEP_IN_REGISTER(v) __asm__("" : "+w"(v))
#else
#define KEEP_IN_REGISTER(v) ((void)0)
#endif
typedef float vfu __attribute__((vector_size(VL * 4), aligned(4)));

int moekit_gate_version(void) { return MOEKIT_GATE_VERSION; }

const char *moekit_gate_isa(void) { return ISA; }

/* 1 when this CPU runs the instruction set the library was compiled for (it may have been built on
 * another machine with -march=native), else 0: the loader then refuses it. */
int moekit_gate_check(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
#if defined(__AVX512F__)
  if (!__builtin_cpu_supports("avx512f")) return 0;
#endif
#if defined(__AVX2__)
  if (!__builtin_cpu_supports("avx2")) return 0;
#endif
#if defined(__FMA__)
  if (!__builtin_cpu_supports("fma")) return 0;
#endif
#endif
  return 1;
}

static size_t chunks(int d) { return ((size_t)d + VL - 1) / VL; }
static size_t groups(int E) { return ((size_t)E + NE - 1) / NE; }

/* Floats of the packed weight for E experts of length d. */
size_t moekit_gate_packed_floats(int E, int d) { return groups(E) * chunks(d) * NE * VL; }

/* Packs w [E, d] (row-major) into p (moekit_gate_packed_floats(E, d) floats). */
void moekit_gate_pack(const float *w, int E, int d, float *p) {
  size_t nc = chunks(d), ng = groups(E);
  for (size_t g = 0; g < ng; g++)
    for (size_t c = 0; c < nc; c++)
      for (int e = 0; e < NE; e++)
        for (int l = 0; l < VL; l++) {
          size_t ex = g * NE + e, j = c * VL + l;
          p[((g * nc + c) * NE + e) * VL + l] = (ex < (size_t)E && j < (size_t)d) ? w[ex * d + j] : 0.0f;
        }
}

typedef int vi_t __attribute__((vector_size(VL * 4)));

/* Lanes of a where m is true (all bits set), else of b. */
static inline vf vsel(vi_t m, vf a, vf b) {
  vi_t ia, ib;
  memcpy(&ia, &a, sizeof a);
  memcpy(&ib, &b, sizeof b);
  ia = (ia & m) | (ib & ~m);
  memcpy(&a, &ia, sizeof a);
  return a;
}

/* Sum and max of the lanes of a, by halving (a shuffle tree of log2(VL) steps). __builtin_shufflevector
 * takes literal lane indices (GCC 12+ and Clang alike): SWh(v) swaps the lanes h apart. */
#if VL == 16
#define SW8(v) __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7)
#define SW4(v) __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11)
#define SW2(v) __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13)
#define SW1(v) __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14)
#define TREE(v, op) (op(v, SW8(v)), op(v, SW4(v)), op(v, SW2(v)), op(v, SW1(v)))
#elif VL == 8
#define SW4(v) __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3)
#define SW2(v) __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5)
#define SW1(v) __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6)
#define TREE(v, op) (op(v, SW4(v)), op(v, SW2(v)), op(v, SW1(v)))
#else
#define SW2(v) __builtin_shufflevector(v, v, 2, 3, 0, 1)
#define SW1(v) __builtin_shufflevector(v, v, 1, 0, 3, 2)
#define TREE(v, op) (op(v, SW2(v)), op(v, SW1(v)))
#endif
#define ADD_(v, w) (v += (w))
#define MAX_(v, w) (v = vmax(v, (w)))

static inline vf vmax(vf a, vf b) { return vsel(b > a, b, a); }

static inline float hsum(vf a) {
  TREE(a, ADD_);
  return a[0];
}

static inline float hmax(vf a) {
  TREE(a, MAX_);
  return a[0];
}

static inline vi_t vmini(vi_t a, vi_t b) {
  const vi_t lt = b < a;
  return (b & lt) | (a & ~lt);
}
#define MINI_(v, w) (v = vmini(v, (w)))

static inline int hmini(vi_t a) {
  TREE(a, MINI_);
  return a[0];
}

static inline int hsumi(vi_t a) {
  TREE(a, ADD_);
  return a[0];
}

/* The ranks of the VL values in chunk v among v0[0 .. n) (n <= 64; larger first, equal values by lower
 * position; position p0 + j for lane j of v): rk[j] = how many of v0 come before v's lane j. */
static inline vi_t ranks_in(const float *v0, int n, vf v, int p0) {
  vi_t rk = {0}, pos;
  for (int j = 0; j < VL; j++) pos[j] = p0 + j;
  for (int b = 0; b < n; b++) {
    const vf vb = (vf){0} + v0[b];
    rk -= (vb > v) | ((vb == v) & (pos > (vi_t){0} + b));
  }
  return rk;
}

#if VL == 16 && NE == 8
/* The NE = 8 accumulators of one token reduced to their 8 sums by a shuffle tree (lane order kept). */
static inline void reduce_ne(const vf *a, float *out) {
#define LO(u, v) __builtin_shufflevector(u, v, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
#define HI(u, v) __builtin_shufflevector(u, v, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31)
#define LO2(u, v) __builtin_shufflevector(u, v, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27)
#define HI2(u, v) __builtin_shufflevector(u, v, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31)
#define LO3(u, v) __builtin_shufflevector(u, v, 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29)
#define HI3(u, v) __builtin_shufflevector(u, v, 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31)
  /* b_ij: lanes 0-7 partial sums of a_i, lanes 8-15 of a_j */
  vf b01 = LO(a[0], a[1]) + HI(a[0], a[1]);
  vf b23 = LO(a[2], a[3]) + HI(a[2], a[3]);
  vf b45 = LO(a[4], a[5]) + HI(a[4], a[5]);
  vf b67 = LO(a[6], a[7]) + HI(a[6], a[7]);
  /* c: 4 lanes each of a_0..a_3 */
  vf c03 = LO2(b01, b23) + HI2(b01, b23);
  vf c47 = LO2(b45, b67) + HI2(b45, b67);
  /* 2 lanes each of a_0..a_7 */
  vf e = LO3(c03, c47) + HI3(c03, c47);
  typedef float v8 __attribute__((vector_size(32)));
  v8 f = __builtin_shufflevector(e, e, 0, 2, 4, 6, 8, 10, 12, 14) +
         __builtin_shufflevector(e, e, 1, 3, 5, 7, 9, 11, 13, 15);
  memcpy(out, &f, sizeof f);
}
#else
/* The NE accumulators of one token reduced to their NE sums (a halving tree each). */
static inline void reduce_ne(const vf *a, float *out) {
  for (int i = 0; i < NE; i++) out[i] = hsum(a[i]);
}
#endif

/* One micro block: rows x[0..mr) (row stride d; x points at chunk c0 of the first row) times the NE
 * experts of a packed group over nch chunks of d (p points at the group's chunk c0), then, when tail, the
 * zero-padded partial chunk at the end of d. The MR x NE sums go to o (row stride ldo, ne experts), added
 * to what is there when add. When xpf is set, the same columns of the rows at xpf are fetched into L2
 * meanwhile (the next micro block's, on the first pass over them). */
static inline __attribute__((always_inline)) void micro(const float *x, int d, const float *p, int nch,
                                                         int tail, int mr, int add, const float *xpf,
                                                         float *o, int ldo, int ne) {
  vf acc[MR][NE];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int e = 0; e < NE; e++) acc[r][e] = (vf){0};
  for (int c = 0; c < nch; c++, p += NE * VL) {
    vf xv[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
      if (r < mr) xv[r] = *(const vfu *)(x + (size_t)r * d + (size_t)c * VL);
    if (xpf) {
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++) __builtin_prefetch(xpf + (size_t)r * d + (size_t)c * VL, 0, 2);
    }
#pragma GCC unroll 8
    for (int e = 0; e < NE; e++) {
      vf w = *(const vfu *)(p + e * VL);
      KEEP_IN_REGISTER(w); /* one load per weight vector, reused by the MR tokens from a register */
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++)
        if (r < mr) acc[r][e] += xv[r] * w;
    }
  }
  if (tail) { /* the zero-padded copies of the last partial chunk */
    const int rest = d % VL;
    vf xv[MR];
    for (int r = 0; r < MR; r++) {
      xv[r] = (vf){0};
      if (r < mr) memcpy(&xv[r], x + (size_t)r * d + (size_t)nch * VL, (size_t)rest * 4);
    }
    for (int e = 0; e < NE; e++) {
      vf w = *(const vfu *)(p + e * VL);
      for (int r = 0; r < MR; r++)
        if (r < mr) acc[r][e] += xv[r] * w;
    }
  }
  float s[MR][NE];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
    if (r < mr) reduce_ne(acc[r], s[r]);
  for (int r = 0; r < mr; r++) {
    float *orow = o + (size_t)r * ldo;
    if (ne == NE) {
      if (add)
        for (int e = 0; e < NE; e++) orow[e] += s[r][e];
      else
        for (int e = 0; e < NE; e++) orow[e] = s[r][e];
    } else {
      for (int e = 0; e < ne; e++) orow[e] = add ? orow[e] + s[r][e] : s[r][e];
    }
  }
}

/* This CPU's L1 data and L2 cache sizes in bytes (32 KiB and 1 MiB where the OS does not say), asked
 * once (Workers may ask at the same time: they find the same sizes). */
static size_t cache_l1 = 0, cache_l2 = 0;
static void cache_sizes(void) {
  if (__atomic_load_n(&cache_l1, __ATOMIC_ACQUIRE)) return;
  long l1 = 0, l2 = 0;
#if defined(__linux__) && defined(_SC_LEVEL1_DCACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
  l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE);
  l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
  __atomic_store_n(&cache_l2, l2 >= 128 * 1024 && l2 <= 64 * 1024 * 1024 ? (size_t)l2 : 1024 * 1024,
                   __ATOMIC_RELAXED);
  __atomic_store_n(&cache_l1, l1 >= 16 * 1024 && l1 <= 1024 * 1024 ? (size_t)l1 : 32 * 1024,
                   __ATOMIC_RELEASE);
}

/* The blocking of moekit_gate_logits for rows of length d: chunks per K block (kc) and tokens per block
 * (tb, a multiple of MR). */
static void blocking(int d, int *kc, int *tb) {
  cache_sizes();
  const size_t nc = chunks(d), gbytes = NE * VL * 4;
  /* a group's K block of packed weight takes up to half of L1 (measured against 1/3, 2/3 and 3/4 on a
   * Zen 5: 2/3 and 3/4 were slower, 1/3 alike) */
  size_t k = cache_l1 / 2 / gbytes;
  if (k >= nc) k = nc;
  else { /* K blocks of about equal size */
    const size_t nb = (nc + k - 1) / k;
    k = (nc + nb - 1) / nb;
  }
  *kc = k < 1 ? 1 : (int)k;
  /* the token block's K block of X rows takes up to half of L2 (Mixtral's shape ran 1.2-1.4x faster than
   * with 3/8 or 1/4; 5/8 no faster) */
  int t = (int)(cache_l2 / 2 / ((size_t)*kc * VL * 4)) / MR * MR;
  *tb = t < MR ? MR : t;
}

/* out[t * ldo + e] = x[t, :] . w[e, :] for t < T, e < E; p is moekit_gate_pack's output.
 * Loops, outer to inner: token blocks (tb tokens), K blocks along d (kc chunks), expert groups, micro
 * blocks of MR tokens. A group's K block of weight stays in L1 while the block's micro blocks use it; the
 * token block's K block of X stays in L2 while the groups use it (it comes from memory on the first
 * group's pass, which fetches the next micro block's rows ahead; every group's pass fetches the next
 * weight block into L2). Each K block's sums are added to out,
 * so a logit is summed in the same order for every T and every thread. */
void moekit_gate_logits(const float *x, int T, int d, const float *p, int E, float *out, int ldo) {
  const size_t ng = groups(E), nc = chunks(d), gstride = nc * NE * VL;
  const int full = d / VL, tail = full < (int)nc;
  int kc, tb;
  blocking(d, &kc, &tb);
  for (int t0 = 0; t0 < T; t0 += tb) {
    const int t1 = T - t0 < tb ? T : t0 + tb;
    for (int c0 = 0; c0 < full || (c0 == 0 && tail); c0 += kc) {
      const int c1 = full - c0 < kc ? full : c0 + kc, add = c0 > 0, last = c1 == full;
      const int nch = c1 - c0, tl = last && tail;
      for (size_t g = 0; g < ng; g++) {
        const int ne = E - (int)(g * NE) < NE ? E - (int)(g * NE) : NE;
        const float *pk = p + g * gstride + (size_t)c0 * NE * VL;
        float *og = out + g * NE;
        /* the next weight block (the next group's, else the first group's next K block) is fetched into
         * L2 meanwhile, a few lines per micro block: it would otherwise come from memory (or L3) while the
         * first micro block of its group waits (DeepSeek-V3's 7.3 MB gate on a Zen 5: GEMM 1.1x faster) */
        const char *pn = g + 1 < ng ? (const char *)(pk + gstride)
                         : c1 < full ? (const char *)(p + (size_t)c1 * NE * VL) : 0;
        const int nmicro = (t1 - t0 + MR - 1) / MR;
        const int nlines = (int)(((size_t)(nch + tl) * NE * VL * 4 + 63) / 64);
        const int per = (nlines + nmicro - 1) / nmicro;
        int line = 0;
        for (int t = t0; t < t1; t += MR) {
          const int mr = t1 - t < MR ? t1 - t : MR;
          if (pn)
            for (int j = 0; j < per && line < nlines; j++, line++) __builtin_prefetch(pn + (size_t)line * 64, 0, 2);
          const float *xt = x + (size_t)t * d + (size_t)c0 * VL;
          float *ot = og + (size_t)t * ldo;
          if (mr == MR) {
            if (g == 0 && t + 2 * MR <= t1) {
              if (add) micro(xt, d, pk, nch, tl, MR, 1, xt + (size_t)MR * d, ot, ldo, ne);
              else micro(xt, d, pk, nch, tl, MR, 0, xt + (size_t)MR * d, ot, ldo, ne);
            } else if (add) micro(xt, d, pk, nch, tl, MR, 1, 0, ot, ldo, ne);
            else micro(xt, d, pk, nch, tl, MR, 0, 0, ot, ldo, ne);
          } else if (mr == 2) micro(xt, d, pk, nch, tl, 2, add, 0, ot, ldo, ne);
          else micro(xt, d, pk, nch, tl, 1, add, 0, ot, ldo, ne);
        }
      }
    }
  }
}

/* exp(x) for x <= 0 on every lane (Cephes' expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial,
 * 2^n by the exponent bits); relative error about 2e-7; x below -87 gives about 1e-38, not 0. */
static inline vf vexp_neg(vf x) {
  const vf lo = (vf){0} - 87.0f;
  x = vsel(x < lo, lo, x);
  /* n = round(x / ln 2) by the 1.5 * 2^23 trick (|n| <= 126) */
  vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  vf r = x - n * 0.693359375f + n * 2.12194440e-4f;
  vf p = (vf){0} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  vi_t e = (__builtin_convertvector(n, vi_t) + 127) << 23;
  vf scale;
  memcpy(&scale, &e, sizeof scale);
  return p * scale;
}

/*
 * The fused softmax top-k epilogue of routing's softmaxTopK selector over logits rows [rows, E] (row
 * stride E): per row the k best experts by logit (descending, equal logits by ascending index) into idx,
 * their softmax probabilities exp(l - max) / sum into scores, and the weights (the same renormalised over
 * the k when norm, else the scores). Returns -1, or the first row with a non-finite logit (nothing
 * is written for it or after it: the caller reports it).
 */
int moekit_gate_softmax_topk(const float *L, int rows, int E, int k, int norm, int *idx, float *w, float *sc) {
  const int full = E / VL;
  int bi[65], ci[64 + VL];
  float bv[65], cv[64 + VL];
  double ex[64];
  if (k < 1 || k > 64 || k > E) return -2;
  for (int i = 0; i < rows; i++) {
    const float *l = L + (size_t)i * E;
    /* max, and a NaN detector (v - v is 0 for finite v, NaN for an infinity or NaN) */
    vf mx = (vf){0} - __builtin_inff(), bad = (vf){0};
    vi_t mi = {0}, pos; /* per lane, the first index holding the lane's max */
    for (int j = 0; j < VL; j++) pos[j] = j;
    for (int c = 0; c < full; c++, pos += VL) {
      vf v = *(const vfu *)(l + c * VL);
      const vi_t gt = v > mx;
      mx = vsel(gt, v, mx);
      mi = (pos & gt) | (mi & ~gt);
      bad += v - v;
    }
    float m = hmax(mx), nb = hsum(bad);
    for (int e = full * VL; e < E; e++) {
      m = l[e] > m ? l[e] : m;
      nb += l[e] - l[e];
    }
    if (nb != 0 || m != m) return i;
    /* softmax sum, float32 lanes */
    vf acc = (vf){0};
    for (int c = 0; c < full; c++) acc += vexp_neg(*(const vfu *)(l + c * VL) - m);
    if (full * VL < E) {
      vf t = (vf){0} - 1e30f;
      memcpy(&t, l + full * VL, (size_t)(E - full * VL) * 4);
      for (int j = E - full * VL; j < VL; j++) t[j] = -1e30f;
      acc += vexp_neg(t - m);
    }
    const float z = hsum(acc);
    /* top-k. A lower bound first: the k-th largest of the VL lane maxima is reached by at least k
     * logits, so only logits at or above it (and the tail's) are candidates, usually k to 2k of them;
     * each candidate's place is its rank among them (larger logit first, equal logits by index), counted
     * without branches. Otherwise (k > VL, E < VL, or too many candidates): sorted insertion of every
     * logit. */
    int n = 0;
    if (k == 1) {
      /* the first index holding the max: the lowest first index of the lanes whose max it is, else the
       * first in the tail */
      const vi_t eq = mx == (vf){0} + m, none = (vi_t){0} + E;
      int e = full > 0 ? hmini((mi & eq) | (none & ~eq)) : E;
      if (e == E)
        for (e = full * VL; l[e] != m;) e++;
      bi[0] = e;
      bv[0] = m;
      n = 1;
    } else {
      float tau = -__builtin_inff();
      if (full > 0 && k <= VL) { /* the lane max of rank k - 1 (every rank is held by one lane) */
        float lanes[VL];
        memcpy(lanes, &mx, sizeof mx);
        tau = hmax(vsel(ranks_in(lanes, VL, mx, 0) == k - 1, mx, (vf){0} - __builtin_inff()));
      }
      /* the candidates in index order: per chunk a bit mask of the lanes >= tau, then its set bits (none
       * gathered when E < VL: sorted insertion is quicker for so few) */
      int c = full > 0 ? 0 : 65;
      vi_t bit;
      for (int j = 0; j < VL; j++) bit[j] = 1 << j;
      const vf tv = (vf){0} + tau;
      for (int ch = 0; ch < full && c <= 64; ch++) {
        for (int bits = hsumi((*(const vfu *)(l + ch * VL) >= tv) & bit); bits; bits &= bits - 1, c++) {
          const int e = ch * VL + __builtin_ctz(bits);
          cv[c] = l[e];
          ci[c] = e;
        }
      }
      for (int e = full * VL; e < E && c <= 64; e++) {
        cv[c] = l[e];
        ci[c] = e;
        c += l[e] >= tau;
      }
      if (c <= 64) {
        const int nch = (c + VL - 1) / VL;
        for (int a = c; a < nch * VL; a++) cv[a] = -__builtin_inff();
        int rk[64 + VL];
        for (int ch = 0; ch < nch; ch++) {
          const vi_t r = ranks_in(cv, c, *(const vfu *)(cv + ch * VL), ch * VL);
          memcpy(rk + ch * VL, &r, sizeof r);
        }
        for (int a = 0; a < c; a++) {
          const int rank = rk[a] < k ? rk[a] : k; /* slot k is a discard */
          bv[rank] = cv[a];
          bi[rank] = ci[a];
        }
        n = k;
      } else {
        for (int e = 0; e < E; e++) {
          const float v = l[e];
          if (n == k && !(v > bv[k - 1])) continue;
          int pos = n < k ? n++ : k - 1;
          while (pos > 0 && bv[pos - 1] < v) {
            bv[pos] = bv[pos - 1];
            bi[pos] = bi[pos - 1];
            pos--;
          }
          bv[pos] = v;
          bi[pos] = e;
        }
      }
    }
    /* weights in float64, as the selector computes them */
    double zk = ex[0] = 1; /* exp(0) */
    for (int j = 1; j < k; j++) zk += ex[j] = __builtin_exp((double)bv[j] - (double)bv[0]);
    for (int j = 0; j < k; j++) {
      const size_t o = (size_t)i * k + j;
      idx[o] = bi[j];
      sc[o] = (float)(ex[j] / z);
      w[o] = (float)(norm ? ex[j] / zk : ex[j] / z);
    }
  }
  return -1;
}
