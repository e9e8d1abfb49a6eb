/* LSTM and GRU (ONNX, layout 0, default activations), float32 scalar reference.
 *
 * Inputs: X [seq, batch, input], W [dirs, G*H, input], R [dirs, G*H, H], B? [dirs, 2*G*H],
 * sequence_lens? (must be absent), initial_h? [dirs, batch, H], and for LSTM initial_c? and
 * peepholes P? [dirs, 3H]. Gate order: LSTM i, o, f, c (P: i, o, f); GRU z, r, h. Outputs, each
 * optional (-1): Y [seq, dirs, batch, H], Y_h [dirs, batch, H], LSTM Y_c [dirs, batch, H].
 * `clip` bounds every gate's pre-activation (after bias and peephole) to [-clip, clip].
 *
 * Time is sequential; within a step each (batch, hidden unit) pair is independent given the
 * previous hidden state, so a step is split over those pairs: each computes its gates' dot
 * products over contiguous rows of W and R. The hidden state is double-buffered in scratch
 * (read h_prev, write h_next); the LSTM cell state is updated in place since a unit reads only its
 * own. GRU without linear_before_reset needs r (.) h_prev for all units before any candidate, so
 * its step runs in two phases. Directions run one after the other.
 *
 * Above EDGE_ISA_SCALAR, with constant W, R and B, the products run on the GEMM family
 * (kernels/gemm.h) and the loops above stay as the reference EDGE_ISA=scalar runs. Prepare packs,
 * per direction, W with the summed biases (Wb + Rb; GRU's candidate rows keep Rb on the recurrent
 * side when linear_before_reset) and R (GRU: its update/reset rows and its candidate rows apart,
 * since the candidate's product waits for r). Eval projects the inputs of every time step in one
 * GEMM (seq * batch rows), then per step multiplies h_prev (or r (.) h_prev) by R and finishes the
 * gates elementwise. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"

enum { RNN_X, RNN_W, RNN_R, RNN_B, RNN_SEQUENCE_LENS, RNN_INITIAL_H, RNN_INITIAL_C, RNN_PEEPHOLES };
enum { RNN_Y, RNN_Y_H, RNN_Y_C };

typedef struct {
  bool lstm, linear_before_reset;
  edge_rnn_kind direction;
  float clip;
  int64_t gates, seq, batch, input_size, hidden, dirs;
  const edge_gemm_kernels *gemm; /* NULL: reference loops */
  void *packed;                  /* per direction: W, R (LSTM all rows; GRU z and r rows), GRU R candidate rows */
  size_t w_bytes, r_bytes, r_candidate_bytes, direction_bytes;
} rnn_plan;

static void rnn_release(edge_node *node) {
  rnn_plan *plan = node->plan;
  if (plan) free(plan->packed);
  free(plan);
  node->plan = NULL;
}

static size_t round_up_64(size_t bytes) { return (bytes + 63) / 64 * 64; }

/* Packs every direction's W and R (see the top of the file); EDGE_OUT_OF_MEMORY on failure. */
static edge_status rnn_pack(edge_context *ctx, const char *op, rnn_plan *p, const edge_tensor *w, const edge_tensor *r,
                            const edge_tensor *b) {
  const edge_gemm_kernels *k = p->gemm;
  const size_t h = (size_t)p->hidden, gh = (size_t)(p->gates * p->hidden), input = (size_t)p->input_size;
  const size_t recurrent_rows = p->lstm ? gh : 2 * h;
  p->w_bytes = round_up_64(edge_gemm_packed_bytes(k, gh, input));
  p->r_bytes = round_up_64(edge_gemm_packed_bytes(k, recurrent_rows, h));
  p->r_candidate_bytes = p->lstm ? 0 : round_up_64(edge_gemm_packed_bytes(k, h, h));
  p->direction_bytes = p->w_bytes + p->r_bytes + p->r_candidate_bytes;
  p->packed = aligned_alloc(64, p->direction_bytes * (size_t)p->dirs);
  float *bias = malloc(sizeof(float) * gh);
  if (!p->packed || !bias) {
    free(bias);
    return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory packing %zu bytes of weights", op,
                     p->direction_bytes * (size_t)p->dirs);
  }
  for (size_t d = 0; d < (size_t)p->dirs; ++d) {
    const float *wd = (const float *)w->data + d * gh * input, *rd = (const float *)r->data + d * gh * h;
    const float *bd = b ? (const float *)b->data + d * 2 * gh : NULL;
    char *out = (char *)p->packed + d * p->direction_bytes;
    for (size_t row = 0; row < gh; ++row) {
      const int recurrent_bias_stays = !p->lstm && p->linear_before_reset && row >= 2 * h;
      bias[row] = bd ? bd[row] + (recurrent_bias_stays ? 0.0f : bd[gh + row]) : 0.0f;
    }
    edge_gemm_pack_weights(k, gh, input, wd, input, bias, out);
    edge_gemm_pack_weights(k, recurrent_rows, h, rd, h, NULL, out + p->w_bytes);
    if (!p->lstm)
      edge_gemm_pack_weights(k, h, h, rd + 2 * h * h, h, bd && p->linear_before_reset ? bd + gh + 2 * h : NULL,
                             out + p->w_bytes + p->r_bytes);
  }
  free(bias);
  return EDGE_OK;
}

static const edge_tensor *optional_input(const edge_context *ctx, const edge_node *node, int32_t i) {
  return i < node->num_inputs && node->inputs[i] >= 0 ? &ctx->tensors[node->inputs[i]] : NULL;
}

static edge_tensor *optional_output(const edge_context *ctx, const edge_node *node, int32_t i) {
  return i < node->num_outputs && node->outputs[i] >= 0 ? &ctx->tensors[node->outputs[i]] : NULL;
}

static edge_status check_shape(edge_context *ctx, const char *op, const char *role, const edge_tensor *t, int32_t rank,
                               const int64_t *shape) {
  if (!t) return EDGE_OK;
  if (t->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: %s '%s' is %s; only float32 is supported", op, role, edge_tensor_name(t),
                     edge_dtype_name(t->dtype));
  bool same = t->rank == rank;
  for (int32_t d = 0; same && d < rank; ++d) same = t->shape[d] == shape[d];
  if (!same) {
    char got[128], want[128];
    edge_format_shape(got, sizeof got, t->rank, t->shape);
    edge_format_shape(want, sizeof want, rank, shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: %s '%s' has shape %s, expected %s", op, role, edge_tensor_name(t), got,
                     want);
  }
  return EDGE_OK;
}

static edge_status rnn_prepare(edge_context *ctx, edge_node *node, bool lstm) {
  const char *op = lstm ? "LSTM" : "GRU";
  int32_t max_inputs = lstm ? 8 : 6, max_outputs = lstm ? 3 : 2;
  rnn_release(node);
  if (node->num_inputs < 3 || node->num_inputs > max_inputs || node->num_outputs < 1 || node->num_outputs > max_outputs)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: has %d inputs and %d outputs, expects 3 to %d inputs and 1 to %d outputs",
                     op, node->num_inputs, node->num_outputs, max_inputs, max_outputs);
  for (int32_t i = 0; i < node->num_inputs; ++i)
    if (node->inputs[i] < (i >= RNN_B ? -1 : 0) || node->inputs[i] >= ctx->num_tensors)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: input %d is tensor %d, not one of the %d tensors", op, i,
                       node->inputs[i], ctx->num_tensors);
  for (int32_t i = 0; i < node->num_outputs; ++i)
    if (node->outputs[i] < -1 || node->outputs[i] >= ctx->num_tensors)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: output %d is tensor %d, not one of the %d tensors", op, i,
                       node->outputs[i], ctx->num_tensors);
  if (node->activation.op != EDGE_UNARY_IDENTITY)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: a fused activation (%s) is not supported; the gates' activations are fixed",
                     op, (unsigned)node->activation.op < EDGE_UNARY_COUNT_ ? edge_unary_names[node->activation.op] : "?");
  if (optional_input(ctx, node, RNN_SEQUENCE_LENS))
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: sequence_lens ('%s') is not supported; every sequence runs to the end",
                     op, edge_tensor_name(optional_input(ctx, node, RNN_SEQUENCE_LENS)));

  const edge_rnn_options *o = &node->options.rnn;
  const edge_tensor *x = optional_input(ctx, node, RNN_X), *w = optional_input(ctx, node, RNN_W);
  const edge_tensor *r = optional_input(ctx, node, RNN_R);
  rnn_plan p = {0};
  p.lstm = lstm;
  p.linear_before_reset = o->linear_before_reset;
  p.direction = o->direction;
  p.clip = o->clip;
  p.gates = lstm ? 4 : 3;
  if (o->direction != EDGE_RNN_FORWARD && o->direction != EDGE_RNN_REVERSE && o->direction != EDGE_RNN_BIDIRECTIONAL)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: direction %d is not FORWARD, REVERSE or BIDIRECTIONAL", op,
                     (int)o->direction);
  if (!(o->clip >= 0.0f))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: clip is %g; it must be >= 0 (0: no clipping)", op, (double)o->clip);
  p.dirs = o->direction == EDGE_RNN_BIDIRECTIONAL ? 2 : 1;
  if (x->rank != 3)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: X '%s' has rank %d; expected [seq, batch, input]", op,
                     edge_tensor_name(x), x->rank);
  p.seq = x->shape[0];
  p.batch = x->shape[1];
  p.input_size = x->shape[2];
  p.hidden = o->hidden_size > 0 ? o->hidden_size : (r->rank == 3 ? r->shape[2] : 0);
  if (p.hidden < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: hidden_size is %d and cannot be taken from R '%s'", op,
                     o->hidden_size, edge_tensor_name(r));
  int64_t gh = p.gates * p.hidden;
  edge_status status;
  int64_t x_shape[3] = {p.seq, p.batch, p.input_size}, w_shape[3] = {p.dirs, gh, p.input_size};
  int64_t r_shape[3] = {p.dirs, gh, p.hidden}, b_shape[2] = {p.dirs, 2 * gh}, state_shape[3] = {p.dirs, p.batch, p.hidden};
  int64_t p_shape[2] = {p.dirs, 3 * p.hidden};
  if ((status = check_shape(ctx, op, "X", x, 3, x_shape)) != EDGE_OK) return status;
  if ((status = check_shape(ctx, op, "W", w, 3, w_shape)) != EDGE_OK) return status;
  if ((status = check_shape(ctx, op, "R", r, 3, r_shape)) != EDGE_OK) return status;
  if ((status = check_shape(ctx, op, "B", optional_input(ctx, node, RNN_B), 2, b_shape)) != EDGE_OK) return status;
  if ((status = check_shape(ctx, op, "initial_h", optional_input(ctx, node, RNN_INITIAL_H), 3, state_shape)) != EDGE_OK)
    return status;
  if (lstm) {
    if ((status = check_shape(ctx, op, "initial_c", optional_input(ctx, node, RNN_INITIAL_C), 3, state_shape)) != EDGE_OK)
      return status;
    if ((status = check_shape(ctx, op, "P", optional_input(ctx, node, RNN_PEEPHOLES), 2, p_shape)) != EDGE_OK)
      return status;
  }
  int64_t y_shape[4] = {p.seq, p.dirs, p.batch, p.hidden};
  for (int32_t i = 0; i < node->num_outputs; ++i) {
    edge_tensor *out = optional_output(ctx, node, i);
    if (!out) continue;
    if (out->dtype != EDGE_FLOAT32)
      return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: output '%s' is %s; only float32 is supported", op, edge_tensor_name(out),
                       edge_dtype_name(out->dtype));
    status = i == RNN_Y ? edge_set_shape(ctx, out, 4, y_shape) : edge_set_shape(ctx, out, 3, state_shape);
    if (status != EDGE_OK) return status;
  }
  rnn_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  *plan = p;
  node->plan = plan;
  /* h_prev, h_next, and the cell state (LSTM) or z, r, r (.) h_prev (GRU) */
  node->scratch_bytes = (size_t)((lstm ? 3 : 5) * p.batch * p.hidden) * sizeof(float);
  const edge_tensor *b = optional_input(ctx, node, RNN_B);
  const edge_kernel_config *kernels = edge_kernels();
  if (kernels->isa != EDGE_ISA_SCALAR && w->kind == EDGE_TENSOR_CONSTANT && r->kind == EDGE_TENSOR_CONSTANT &&
      (!b || b->kind == EDGE_TENSOR_CONSTANT) && p.seq > 0 && p.batch > 0) {
    plan->gemm = &kernels->gemm;
    if ((status = rnn_pack(ctx, op, plan, w, r, b)) != EDGE_OK) return status;
    node->plan_bytes = plan->direction_bytes * (size_t)plan->dirs;
    /* + the input projections of every step, and one step's recurrent products */
    node->scratch_bytes += (size_t)((p.seq + 1) * p.batch * gh) * sizeof(float);
  }
  return EDGE_OK;
}

static float sigmoid(float v) {
  if (v >= 0.0f) return 1.0f / (1.0f + expf(-v));
  float e = expf(v);
  return e / (1.0f + e);
}

static float dot(const float *a, const float *b, int64_t n) {
  float acc = 0.0f;
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

/* Everything one step of one direction reads and writes. */
typedef struct {
  const rnn_plan *plan;
  const float *x_t;               /* X[t]: [batch, input] */
  const float *w, *r, *bias;      /* this direction's W, R, B (bias NULL if absent) */
  const float *peepholes;         /* LSTM P for this direction, or NULL */
  const float *h_prev;
  float *h_next, *cell, *z, *reset, *reset_h;
  float *y_t;                     /* Y[t, dir] ([batch, H]) or NULL */
} rnn_step;

/* x_t . W[row] + h_prev[b] . R[row] + Wb[row] + Rb[row] */
static float gate_input(const rnn_step *s, int64_t b, int64_t row) {
  const rnn_plan *p = s->plan;
  float v = dot(s->x_t + b * p->input_size, s->w + row * p->input_size, p->input_size) +
            dot(s->h_prev + b * p->hidden, s->r + row * p->hidden, p->hidden);
  if (s->bias) v += s->bias[row] + s->bias[p->gates * p->hidden + row];
  return v;
}

static float clip_gate(const rnn_plan *p, float v) {
  if (p->clip > 0.0f) v = v < -p->clip ? -p->clip : v > p->clip ? p->clip : v;
  return v;
}

static void lstm_units(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const rnn_step *s = arg;
  const rnn_plan *p = s->plan;
  int64_t h = p->hidden;
  for (int64_t unit = begin; unit < end; ++unit) {
    int64_t b = unit / h, j = unit % h;
    float c_prev = s->cell[unit];
    float in = gate_input(s, b, j), out = gate_input(s, b, h + j), forget = gate_input(s, b, 2 * h + j);
    float candidate = gate_input(s, b, 3 * h + j);
    if (s->peepholes) {
      in += s->peepholes[j] * c_prev;
      forget += s->peepholes[2 * h + j] * c_prev;
    }
    in = sigmoid(clip_gate(p, in));
    forget = sigmoid(clip_gate(p, forget));
    candidate = tanhf(clip_gate(p, candidate));
    float c = forget * c_prev + in * candidate;
    if (s->peepholes) out += s->peepholes[h + j] * c;
    out = sigmoid(clip_gate(p, out));
    float hidden = out * tanhf(c);
    s->cell[unit] = c;
    s->h_next[unit] = hidden;
    if (s->y_t) s->y_t[unit] = hidden;
  }
}

static void gru_gates(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const rnn_step *s = arg;
  const rnn_plan *p = s->plan;
  int64_t h = p->hidden;
  for (int64_t unit = begin; unit < end; ++unit) {
    int64_t b = unit / h, j = unit % h;
    s->z[unit] = sigmoid(clip_gate(p, gate_input(s, b, j)));
    s->reset[unit] = sigmoid(clip_gate(p, gate_input(s, b, h + j)));
    s->reset_h[unit] = s->reset[unit] * s->h_prev[unit];
  }
}

static void gru_candidates(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const rnn_step *s = arg;
  const rnn_plan *p = s->plan;
  int64_t h = p->hidden, row_base = 2 * h;
  for (int64_t unit = begin; unit < end; ++unit) {
    int64_t b = unit / h, j = unit % h, row = row_base + j;
    float from_x = dot(s->x_t + b * p->input_size, s->w + row * p->input_size, p->input_size);
    float w_bias = s->bias ? s->bias[row] : 0.0f, r_bias = s->bias ? s->bias[3 * h + row] : 0.0f;
    float from_h = p->linear_before_reset
                       ? s->reset[unit] * (dot(s->h_prev + b * h, s->r + row * h, h) + r_bias)
                       : dot(s->reset_h + b * h, s->r + row * h, h) + r_bias;
    float candidate = tanhf(clip_gate(p, from_x + w_bias + from_h));
    float z = s->z[unit], hidden = (1.0f - z) * candidate + z * s->h_prev[unit];
    s->h_next[unit] = hidden;
    if (s->y_t) s->y_t[unit] = hidden;
  }
}

/* One step of one direction on the GEMM path: the projections are done, the gates finish here. */
typedef struct {
  const rnn_plan *plan;
  const float *x_gates;     /* this step's input projections + biases: [batch, G*H] */
  float *h_gates;           /* h_prev . R^T: [batch, G*H] (GRU candidate columns: see rnn_eval_gemm) */
  const float *peepholes;
  const float *h_prev;
  float *h_next, *cell, *z, *reset, *reset_h;
  float *y_t;
} rnn_gemm_step;

/* The gates of units [j0, j0 + n) of batch row b through the vector kernels: each gate's
 * pre-activations are summed in place in h_gates, then activated as whole runs. Elementwise, so a
 * unit's result does not depend on how the units are split over threads. */
static void lstm_gemm_row_vector(const rnn_gemm_step *s, const edge_vector_kernels *v, int64_t b, int64_t j0,
                                 size_t n) {
  const rnn_plan *p = s->plan;
  const int64_t h = p->hidden, gh = 4 * h, unit0 = b * h + j0;
  const float *xg = s->x_gates + b * gh + j0;
  float *hg = s->h_gates + b * gh + j0, *in = hg, *out = hg + h, *forget = hg + 2 * h, *candidate = hg + 3 * h;
  float *cell = s->cell + unit0, *h_next = s->h_next + unit0;
  const edge_f32_unary_params none = {0.0f, 0.0f}, clip = {-p->clip, p->clip};
  for (int64_t g = 0; g < 4; ++g) v->binary_vv[EDGE_BINARY_ADD](n, hg + g * h, xg + g * h, hg + g * h);
  if (s->peepholes)
    for (size_t j = 0; j < n; ++j) {
      in[j] += s->peepholes[j0 + j] * cell[j];
      forget[j] += s->peepholes[2 * h + j0 + j] * cell[j];
    }
  if (p->clip > 0.0f)
    for (int64_t g = 0; g < 4; ++g)
      if (g != 1 || !s->peepholes) v->unary[EDGE_UNARY_CLIP](n, hg + g * h, hg + g * h, &clip);
  v->unary[EDGE_UNARY_SIGMOID](n, in, in, &none);
  v->unary[EDGE_UNARY_SIGMOID](n, forget, forget, &none);
  v->unary[EDGE_UNARY_TANH](n, candidate, candidate, &none);
  for (size_t j = 0; j < n; ++j) cell[j] = forget[j] * cell[j] + in[j] * candidate[j];
  if (s->peepholes) {
    for (size_t j = 0; j < n; ++j) out[j] += s->peepholes[h + j0 + j] * cell[j];
    if (p->clip > 0.0f) v->unary[EDGE_UNARY_CLIP](n, out, out, &clip);
  }
  v->unary[EDGE_UNARY_SIGMOID](n, out, out, &none);
  v->unary[EDGE_UNARY_TANH](n, cell, h_next, &none);
  v->binary_vv[EDGE_BINARY_MUL](n, h_next, out, h_next);
  if (s->y_t) memcpy(s->y_t + unit0, h_next, n * sizeof(float));
}

static void lstm_gemm_units(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const rnn_gemm_step *s = arg;
  const rnn_plan *p = s->plan;
  const int64_t h = p->hidden, gh = 4 * h;
  const edge_vector_kernels *v = &edge_kernels()->vector;
  if (v->unary[EDGE_UNARY_SIGMOID] && v->unary[EDGE_UNARY_TANH] && v->unary[EDGE_UNARY_CLIP] &&
      v->binary_vv[EDGE_BINARY_ADD] && v->binary_vv[EDGE_BINARY_MUL]) {
    for (int64_t unit = begin; unit < end;) {
      const int64_t b = unit / h, j0 = unit % h, n = (end - unit < h - j0) ? end - unit : h - j0;
      lstm_gemm_row_vector(s, v, b, j0, (size_t)n);
      unit += n;
    }
    return;
  }
  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t b = unit / h, j = unit % h;
    const float *xg = s->x_gates + b * gh, *hg = s->h_gates + b * gh;
    const float c_prev = s->cell[unit];
    float in = xg[j] + hg[j], out = xg[h + j] + hg[h + j], forget = xg[2 * h + j] + hg[2 * h + j];
    float candidate = xg[3 * h + j] + hg[3 * h + j];
    if (s->peepholes) {
      in += s->peepholes[j] * c_prev;
      forget += s->peepholes[2 * h + j] * c_prev;
    }
    in = sigmoid(clip_gate(p, in));
    forget = sigmoid(clip_gate(p, forget));
    candidate = tanhf(clip_gate(p, candidate));
    const float c = forget * c_prev + in * candidate;
    if (s->peepholes) out += s->peepholes[h + j] * c;
    out = sigmoid(clip_gate(p, out));
    const float hidden = out * tanhf(c);
    s->cell[unit] = c;
    s->h_next[unit] = hidden;
    if (s->y_t) s->y_t[unit] = hidden;
  }
}

static void gru_gemm_gates(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const rnn_gemm_step *s = arg;
  const rnn_plan *p = s->plan;
  const int64_t h = p->hidden, gh = 3 * h;
  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t b = unit / h, j = unit % h;
    const float *xg = s->x_gates + b * gh, *hg = s->h_gates + b * gh;
    s->z[unit] = sigmoid(clip_gate(p, xg[j] + hg[j]));
    s->reset[unit] = sigmoid(clip_gate(p, xg[h + j] + hg[h + j]));
    s->reset_h[unit] = s->reset[unit] * s->h_prev[unit];
  }
}

/* h_gates' candidate columns hold h_prev . R_h^T + Rb_h (linear_before_reset) or
 * (r (.) h_prev) . R_h^T (Rb_h is then in x_gates). */
static void gru_gemm_candidates(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const rnn_gemm_step *s = arg;
  const rnn_plan *p = s->plan;
  const int64_t h = p->hidden, gh = 3 * h;
  for (int64_t unit = begin; unit < end; ++unit) {
    const int64_t b = unit / h, j = unit % h;
    const float from_x = s->x_gates[b * gh + 2 * h + j], from_h = s->h_gates[b * gh + 2 * h + j];
    const float candidate =
        tanhf(clip_gate(p, p->linear_before_reset ? from_x + s->reset[unit] * from_h : from_x + from_h));
    const float z = s->z[unit], hidden = (1.0f - z) * candidate + z * s->h_prev[unit];
    s->h_next[unit] = hidden;
    if (s->y_t) s->y_t[unit] = hidden;
  }
}

static edge_status rnn_eval_gemm(edge_context *ctx, edge_node *node) {
  const rnn_plan *p = node->plan;
  const edge_gemm_kernels *k = p->gemm;
  const int64_t units = p->batch * p->hidden, gh = p->gates * p->hidden, h = p->hidden;
  const float *x = optional_input(ctx, node, RNN_X)->data;
  const edge_tensor *initial_h = optional_input(ctx, node, RNN_INITIAL_H);
  const edge_tensor *initial_c = p->lstm ? optional_input(ctx, node, RNN_INITIAL_C) : NULL;
  const edge_tensor *peepholes = p->lstm ? optional_input(ctx, node, RNN_PEEPHOLES) : NULL;
  edge_tensor *y = optional_output(ctx, node, RNN_Y), *y_h = optional_output(ctx, node, RNN_Y_H);
  edge_tensor *y_c = p->lstm ? optional_output(ctx, node, RNN_Y_C) : NULL;
  float *buffers[2] = {(float *)node->scratch, (float *)node->scratch + units};
  float *extra = (float *)node->scratch + 2 * units;
  float *x_gates = extra + (p->lstm ? 1 : 3) * units;
  float *h_gates = x_gates + p->seq * p->batch * gh;
  const int64_t min_units = 256;

  for (int64_t d = 0; d < p->dirs; ++d) {
    const bool reverse = p->direction == EDGE_RNN_REVERSE || d == 1;
    const char *packed = (const char *)p->packed + (size_t)d * p->direction_bytes;
    const void *packed_w = packed, *packed_r = packed + p->w_bytes, *packed_r_candidate = packed + p->w_bytes + p->r_bytes;
    edge_gemm_compute(k, ctx->pool, (size_t)(p->seq * p->batch), (size_t)gh, (size_t)p->input_size, x,
                      (size_t)p->input_size, packed_w, x_gates, (size_t)gh, NULL);
    rnn_gemm_step s = {0};
    s.plan = p;
    s.h_gates = h_gates;
    s.peepholes = peepholes ? (const float *)peepholes->data + d * 3 * h : NULL;
    if (p->lstm) {
      s.cell = extra;
    } else {
      s.z = extra;
      s.reset = extra + units;
      s.reset_h = extra + 2 * units;
    }
    int32_t current = 0;
    if (initial_h) memcpy(buffers[0], (const float *)initial_h->data + d * units, (size_t)units * sizeof(float));
    else memset(buffers[0], 0, (size_t)units * sizeof(float));
    if (p->lstm) {
      if (initial_c) memcpy(s.cell, (const float *)initial_c->data + d * units, (size_t)units * sizeof(float));
      else memset(s.cell, 0, (size_t)units * sizeof(float));
    }
    for (int64_t step = 0; step < p->seq; ++step) {
      const int64_t t = reverse ? p->seq - 1 - step : step;
      s.x_gates = x_gates + t * p->batch * gh;
      s.h_prev = buffers[current];
      s.h_next = buffers[1 - current];
      s.y_t = y ? (float *)y->data + (t * p->dirs + d) * units : NULL;
      if (p->lstm) {
        edge_gemm_compute(k, ctx->pool, (size_t)p->batch, (size_t)gh, (size_t)h, s.h_prev, (size_t)h, packed_r,
                          h_gates, (size_t)gh, NULL);
        edge_nd_parallel(ctx, units, min_units, lstm_gemm_units, &s);
      } else {
        edge_gemm_compute(k, ctx->pool, (size_t)p->batch, (size_t)(2 * h), (size_t)h, s.h_prev, (size_t)h, packed_r,
                          h_gates, (size_t)gh, NULL);
        if (p->linear_before_reset)
          edge_gemm_compute(k, ctx->pool, (size_t)p->batch, (size_t)h, (size_t)h, s.h_prev, (size_t)h,
                            packed_r_candidate, h_gates + 2 * h, (size_t)gh, NULL);
        edge_nd_parallel(ctx, units, min_units, gru_gemm_gates, &s);
        if (!p->linear_before_reset)
          edge_gemm_compute(k, ctx->pool, (size_t)p->batch, (size_t)h, (size_t)h, s.reset_h, (size_t)h,
                            packed_r_candidate, h_gates + 2 * h, (size_t)gh, NULL);
        edge_nd_parallel(ctx, units, min_units, gru_gemm_candidates, &s);
      }
      current = 1 - current;
    }
    if (y_h) memcpy((float *)y_h->data + d * units, buffers[current], (size_t)units * sizeof(float));
    if (y_c) memcpy((float *)y_c->data + d * units, s.cell, (size_t)units * sizeof(float));
  }
  return EDGE_OK;
}

static edge_status rnn_eval(edge_context *ctx, edge_node *node) {
  const rnn_plan *p = node->plan;
  if (p->gemm) return rnn_eval_gemm(ctx, node);
  int64_t units = p->batch * p->hidden, gh = p->gates * p->hidden;
  const float *x = optional_input(ctx, node, RNN_X)->data, *w = optional_input(ctx, node, RNN_W)->data;
  const float *r = optional_input(ctx, node, RNN_R)->data;
  const edge_tensor *bias = optional_input(ctx, node, RNN_B), *initial_h = optional_input(ctx, node, RNN_INITIAL_H);
  const edge_tensor *initial_c = p->lstm ? optional_input(ctx, node, RNN_INITIAL_C) : NULL;
  const edge_tensor *peepholes = p->lstm ? optional_input(ctx, node, RNN_PEEPHOLES) : NULL;
  edge_tensor *y = optional_output(ctx, node, RNN_Y), *y_h = optional_output(ctx, node, RNN_Y_H);
  edge_tensor *y_c = p->lstm ? optional_output(ctx, node, RNN_Y_C) : NULL;
  float *buffers[2] = {(float *)node->scratch, (float *)node->scratch + units};
  float *extra = (float *)node->scratch + 2 * units;
  int64_t min_units = 1 + 4096 / (p->gates * (p->input_size + p->hidden) + 1);
  if (units == 0) return EDGE_OK; /* every output is empty */

  for (int64_t d = 0; d < p->dirs; ++d) {
    bool reverse = p->direction == EDGE_RNN_REVERSE || d == 1;
    rnn_step s = {0};
    s.plan = p;
    s.w = w + d * gh * p->input_size;
    s.r = r + d * gh * p->hidden;
    s.bias = bias ? (const float *)bias->data + d * 2 * gh : NULL;
    s.peepholes = peepholes ? (const float *)peepholes->data + d * 3 * p->hidden : NULL;
    if (p->lstm) {
      s.cell = extra;
    } else {
      s.z = extra;
      s.reset = extra + units;
      s.reset_h = extra + 2 * units;
    }
    int32_t current = 0;
    if (initial_h) memcpy(buffers[0], (const float *)initial_h->data + d * units, (size_t)units * sizeof(float));
    else memset(buffers[0], 0, (size_t)units * sizeof(float));
    if (p->lstm) {
      if (initial_c) memcpy(s.cell, (const float *)initial_c->data + d * units, (size_t)units * sizeof(float));
      else memset(s.cell, 0, (size_t)units * sizeof(float));
    }
    for (int64_t step = 0; step < p->seq; ++step) {
      int64_t t = reverse ? p->seq - 1 - step : step;
      s.x_t = x + t * p->batch * p->input_size;
      s.h_prev = buffers[current];
      s.h_next = buffers[1 - current];
      s.y_t = y ? (float *)y->data + (t * p->dirs + d) * units : NULL;
      if (p->lstm) {
        edge_nd_parallel(ctx, units, min_units, lstm_units, &s);
      } else {
        edge_nd_parallel(ctx, units, min_units, gru_gates, &s);
        edge_nd_parallel(ctx, units, min_units, gru_candidates, &s);
      }
      current = 1 - current;
    }
    if (y_h) memcpy((float *)y_h->data + d * units, buffers[current], (size_t)units * sizeof(float));
    if (y_c) memcpy((float *)y_c->data + d * units, s.cell, (size_t)units * sizeof(float));
  }
  return EDGE_OK;
}

static edge_status lstm_prepare(edge_context *ctx, edge_node *node) { return rnn_prepare(ctx, node, true); }
static edge_status gru_prepare(edge_context *ctx, edge_node *node) { return rnn_prepare(ctx, node, false); }

const edge_op_registration edge_op_lstm = {lstm_prepare, rnn_eval, rnn_release};
const edge_op_registration edge_op_gru = {gru_prepare, rnn_eval, rnn_release};
