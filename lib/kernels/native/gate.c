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
 * accumulators in registers (3 x 8 zmm with AVX-512), reads each token's row of X once per group, and
 * reduces the accumulators to NE logits per token at the end of the row. X is read in place (row-major,
 * any d), so nothing is copied per call.
 */
#include <stddef.h>
#include <string.h>

#define MOEKIT_GATE_VERSION 1

/* Tokens per block (a multiple of MR); measured best of 3, 12, 24, 48 on the bench shapes. */
#define TB (4 * MR)

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

static inline int hsumi(vi_t a) {
  TREE(a, ADD_);
  return a[0];
}

/* The rank of x (at index a) among v[0 .. nch·VL): how many are larger, or equal at a lower index. */
static inline int rank_of(const float *v, int nch, float x, int a) {
  vi_t acc = {0}, lane;
  for (int j = 0; j < VL; j++) lane[j] = j;
  const vf xb = (vf){0} + x;
  const vi_t ab = (vi_t){0} + a;
  for (int ch = 0; ch < nch; ch++, lane += VL) {
    const vf c = *(const vfu *)(v + ch * VL);
    acc += (c > xb) | ((c == xb) & (lane < ab));
  }
  return -hsumi(acc);
}

#if VL == 16 && NE == 8
/* The NE = 8 accumulators of one token reduced to their 8 sums by a shuffle tree (lane order kept). */
static inline void reduce8(const vf *a, float *out) {
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
static inline void reduce8(const vf *a, float *out) {
  for (int i = 0; i < NE; i++) out[i] = hsum(a[i]);
}
#endif

/* One block: rows x[0..mr) (row stride d) times the NE experts of packed group pg; sums to s[mr][NE]. */
static inline __attribute__((always_inline)) void block(const float *x, int d, const float *pg, int mr,
                                                         int pf, float s[MR][NE]) {
  vf acc[MR][NE];
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 8
    for (int e = 0; e < NE; e++) acc[r][e] = (vf){0};
  const int full = d / VL;
  const float *p = pg;
  for (int c = 0; c < full; c++, p += NE * VL) {
    vf xv[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; r++)
      if (r < mr) xv[r] = *(const vfu *)(x + (size_t)r * d + (size_t)c * VL);
    if (pf) { /* first pass over these rows (the first expert group): fetch the next rows into L2 meanwhile */
#pragma GCC unroll 8
      for (int r = 0; r < MR; r++) __builtin_prefetch(x + (size_t)(MR + r) * d + (size_t)c * VL, 0, 2);
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
  if (full * VL < d) { /* the d tail: zero-padded copies of the last partial chunk */
    const int rest = d - full * VL;
    vf xv[MR];
    for (int r = 0; r < MR; r++) {
      xv[r] = (vf){0};
      if (r < mr) memcpy(&xv[r], x + (size_t)r * d + (size_t)full * VL, (size_t)rest * 4);
    }
    for (int e = 0; e < NE; e++) {
      vf w = *(const vfu *)(p + e * VL);
      for (int r = 0; r < MR; r++)
        if (r < mr) acc[r][e] += xv[r] * w;
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; r++)
    if (r < mr) reduce8(acc[r], s[r]);
}

/* out[t * ldo + e] = x[t, :] . w[e, :] for t < T, e < E; p is moekit_gate_pack's output. Tokens go in
 * blocks of tb (a multiple of MR): each expert group's packed weight is reused by all of a block's tokens
 * while it is hot in L1/L2. */
void moekit_gate_logits(const float *x, int T, int d, const float *p, int E, float *out, int ldo) {
  const int tb = TB;
  const size_t ng = groups(E), gstride = chunks(d) * NE * VL;
  float s[MR][NE];
  for (int t0 = 0; t0 < T; t0 += tb) {
    const int t1 = T - t0 < tb ? T : t0 + tb;
    for (size_t g = 0; g < ng; g++) {
      const int ne = E - (int)(g * NE) < NE ? E - (int)(g * NE) : NE;
      for (int t = t0; t < t1; t += MR) {
        const int mr = t1 - t < MR ? t1 - t : MR;
        const float *xt = x + (size_t)t * d;
        if (mr == MR && g == 0) block(xt, d, p, MR, 1, s);
        else if (mr == MR) block(xt, d, p + g * gstride, MR, 0, s);
        else if (mr == 2) block(xt, d, p + g * gstride, 2, 0, s);
        else block(xt, d, p + g * gstride, 1, 0, s);
        for (int r = 0; r < mr; r++)
          for (int e = 0; e < ne; e++) out[(size_t)(t + r) * ldo + g * NE + e] = s[r][e];
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
    for (int c = 0; c < full; c++) {
      vf v = *(const vfu *)(l + c * VL);
      mx = vsel(v > mx, v, mx);
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
     * without branches. Otherwise (k > VL, or too many candidates): sorted insertion of every logit. */
    int n = 0;
    if (k == 1) {
      /* the first index holding the max: the first chunk with a lane equal to it, then that lane */
      const vf mv = (vf){0} + m;
      int e = 0;
      for (int c = 0; c < full; c++, e += VL) {
        vf eq = vsel(*(const vfu *)(l + c * VL) == mv, (vf){0} + 1.0f, (vf){0});
        if (hmax(eq) > 0) break;
      }
      while (l[e] != m) e++;
      bi[0] = e;
      bv[0] = m;
      n = 1;
    } else {
      float tau = -__builtin_inff();
      if (full > 0 && k <= VL) {
        float lanes[VL];
        memcpy(lanes, &mx, sizeof mx);
        for (int j = 0; j < VL; j++)
          if (rank_of(lanes, 1, lanes[j], j) == k - 1) tau = lanes[j];
      }
      int c = 0;
      for (int e = 0; e < E && c <= 64; e++) {
        cv[c] = l[e];
        ci[c] = e;
        c += l[e] >= tau;
      }
      if (c <= 64) {
        const int nch = (c + VL - 1) / VL;
        for (int a = c; a < nch * VL; a++) cv[a] = -__builtin_inff();
        for (int a = 0; a < c; a++) {
          int rank = rank_of(cv, nch, cv[a], a);
          rank = rank < k ? rank : k; /* slot k is a discard */
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
