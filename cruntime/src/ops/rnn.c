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
 * its step runs in two phases. Directions run one after the other. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "broadcast.h"
#include "ops.h"

enum { RNN_X, RNN_W, RNN_R, RNN_B, RNN_SEQUENCE_LENS, RNN_INITIAL_H, RNN_INITIAL_C, RNN_PEEPHOLES };
enum { RNN_Y, RNN_Y_H, RNN_Y_C };

typedef struct {
  bool lstm, linear_before_reset;
  edge_rnn_kind direction;
  float clip;
  int64_t gates, seq, batch, input_size, hidden, dirs;
} rnn_plan;

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
    return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: %s '%s' is %s; only float32 is supported", op, role, edge_nd_name(t),
                     edge_dtype_name(t->dtype));
  bool same = t->rank == rank;
  for (int32_t d = 0; same && d < rank; ++d) same = t->shape[d] == shape[d];
  if (!same) {
    char got[128], want[128];
    edge_format_shape(got, sizeof got, t->rank, t->shape);
    edge_format_shape(want, sizeof want, rank, shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: %s '%s' has shape %s, expected %s", op, role, edge_nd_name(t), got,
                     want);
  }
  return EDGE_OK;
}

static edge_status rnn_prepare(edge_context *ctx, edge_node *node, bool lstm) {
  const char *op = lstm ? "LSTM" : "GRU";
  int32_t max_inputs = lstm ? 8 : 6, max_outputs = lstm ? 3 : 2;
  free(node->state);
  node->state = NULL;
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
                     op, edge_nd_name(optional_input(ctx, node, RNN_SEQUENCE_LENS)));

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
                     edge_nd_name(x), x->rank);
  p.seq = x->shape[0];
  p.batch = x->shape[1];
  p.input_size = x->shape[2];
  p.hidden = o->hidden_size > 0 ? o->hidden_size : (r->rank == 3 ? r->shape[2] : 0);
  if (p.hidden < 1)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s: hidden_size is %d and cannot be taken from R '%s'", op,
                     o->hidden_size, edge_nd_name(r));
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
      return edge_fail(ctx, EDGE_UNSUPPORTED, "%s: output '%s' is %s; only float32 is supported", op, edge_nd_name(out),
                       edge_dtype_name(out->dtype));
    status = i == RNN_Y ? edge_set_shape(ctx, out, 4, y_shape) : edge_set_shape(ctx, out, 3, state_shape);
    if (status != EDGE_OK) return status;
  }
  rnn_plan *plan = malloc(sizeof *plan);
  if (!plan) return edge_fail(ctx, EDGE_OUT_OF_MEMORY, "%s: out of memory", op);
  *plan = p;
  node->state = plan;
  /* h_prev, h_next, and the cell state (LSTM) or z, r, r (.) h_prev (GRU) */
  node->scratch_bytes = (size_t)((lstm ? 3 : 5) * p.batch * p.hidden) * sizeof(float);
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

static edge_status rnn_eval(edge_context *ctx, edge_node *node) {
  const rnn_plan *p = node->state;
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

static void rnn_release(edge_node *node) {
  free(node->state);
  node->state = NULL;
}

const edge_op_registration edge_op_lstm = {lstm_prepare, rnn_eval, rnn_release};
const edge_op_registration edge_op_gru = {gru_prepare, rnn_eval, rnn_release};
