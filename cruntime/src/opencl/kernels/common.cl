/* Prepended to every kernel family (the Makefile embeds common.cl + <family>.cl as one source).
 * Activations are stored as float, or with -DSTORAGE_HALF=1 as half through vload_half and
 * vstore_half, which every OpenCL 1.2 device has (cl_khr_fp16 is not needed: the arithmetic stays
 * float). Each activation argument is the device arena and an element offset into it. */
#ifdef STORAGE_HALF
typedef half storage;
#define LOAD(p, i) vload_half((i), (p))
#define STORE(v, p, i) vstore_half_rte((v), (i), (p))
#else
typedef float storage;
#define LOAD(p, i) ((p)[i])
#define STORE(v, p, i) ((p)[i] = (v))
#endif

/* The runtime's unary ops and fused activations, numbered as edge_unary_kind. */
inline float activate(float x, int op, float alpha, float beta) {
  switch (op) {
    case 0: return x;
    case 1: return x < 0.0f ? 0.0f : x;
    case 2: return clamp(x, 0.0f, 6.0f);
    case 3: return fmin(fmax(x, alpha), beta);
    case 4: return x < 0.0f ? alpha * x : x;
    case 5: return x < 0.0f ? alpha * expm1(x) : x;
    case 6: return 1.0f / (1.0f + exp(-x));
    case 7: return tanh(x);
    case 8: return clamp(alpha * x + beta, 0.0f, 1.0f);
    case 9: return x * clamp(x + 3.0f, 0.0f, 6.0f) / 6.0f;
    case 10: return 0.5f * x * (1.0f + erf(x * 0.70710678118654752f));
    case 11: return 0.5f * x * (1.0f + tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case 12: return erf(x);
    case 13: return exp(x);
    case 14: return log(x);
    case 15: return sqrt(x);
    case 16: return 1.0f / sqrt(x);
    case 17: return 1.0f / x;
    case 18: return -x;
    case 19: return fabs(x);
    case 20: return floor(x);
    case 21: return ceil(x);
    case 22: return rint(x);
    case 23: return x > 0.0f ? 1.0f : (x < 0.0f ? -1.0f : x);
    case 24: return log1p(exp(-fabs(x))) + (x > 0.0f ? x : 0.0f);
    case 25: return sin(x);
    case 26: return cos(x);
    case 27: return x == 0.0f ? 1.0f : 0.0f;
    case 28: return isnan(x) ? 1.0f : 0.0f;
    case 29: return isinf(x) ? 1.0f : 0.0f;
    case 30: return x * x;
    case 31: return asin(x);
    case 32: return acos(x);
    case 33: return atan(x);
    case 34: return x / (1.0f + exp(-x));
  }
  return x;
}
