/* ACTIVATION_GRAD: (x, dy) -> dx = dy * f'(x) for the UnaryOp f named by the options.
 *
 * f' is evaluated in double from x (not from f(x)), then multiplied by dy and rounded once. At
 * the kinks the derivative is fixed by the training contract: RELU'(0) = 0, RELU6' = 0 at 0 and 6,
 * CLIP' = 1 strictly inside (lo, hi) else 0, LEAKY_RELU'(0) = alpha, ABS'(0) = 0; HARD_SIGMOID' is
 * alpha strictly inside its linear part; HARD_SWISH' is (2x + 3) / 6 strictly inside (-3, 3), 1 from
 * 3 on and 0 at -3 and below (as converter/ops/training.py); ELU
 * takes its branch the way the forward does (x < 0: alpha * e^x, else 1). Ops without a gradient
 * (FLOOR, CEIL, ROUND, SIGN, NOT, IS_NAN, IS_INF) are refused at prepare.
 *
 * Elementwise, split into fixed blocks of elements. The loops are the reference; RELU also has a
 * vector kernel (kernels/vector.h relu_grad, bit-identical) above EDGE_ISA=scalar. */
#include <math.h>

#include "kernels/config.h"
#include "ops.h"
#include "training.h"

static bool has_gradient(edge_unary_kind op) {
  switch (op) {
    case EDGE_UNARY_FLOOR: case EDGE_UNARY_CEIL: case EDGE_UNARY_ROUND: case EDGE_UNARY_SIGN: case EDGE_UNARY_NOT:
    case EDGE_UNARY_IS_NAN: case EDGE_UNARY_IS_INF: case EDGE_UNARY_COUNT_:
      return false;
    default:
      return (unsigned)op < EDGE_UNARY_COUNT_;
  }
}

/* f'(x) in double. */
static double derivative(edge_unary_kind op, double x, double alpha, double beta) {
  switch (op) {
    case EDGE_UNARY_IDENTITY: return 1.0;
    case EDGE_UNARY_RELU: return x > 0.0 ? 1.0 : 0.0;
    case EDGE_UNARY_RELU6: return x > 0.0 && x < 6.0 ? 1.0 : 0.0;
    case EDGE_UNARY_CLIP: return x > alpha && x < beta ? 1.0 : 0.0;
    case EDGE_UNARY_LEAKY_RELU: return x > 0.0 ? 1.0 : alpha;
    case EDGE_UNARY_ELU: return x < 0.0 ? alpha * exp(x) : 1.0;
    case EDGE_UNARY_SIGMOID: {
      double s = x >= 0.0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
      return s * (1.0 - s);
    }
    case EDGE_UNARY_TANH: {
      double t = tanh(x);
      return 1.0 - t * t;
    }
    case EDGE_UNARY_HARD_SIGMOID: {
      double v = alpha * x + beta;
      return v > 0.0 && v < 1.0 ? alpha : 0.0;
    }
    case EDGE_UNARY_HARD_SWISH: return x >= 3.0 ? 1.0 : (x > -3.0 ? (2.0 * x + 3.0) / 6.0 : 0.0);
    case EDGE_UNARY_GELU: {
      double cdf = 0.5 * (1.0 + erf(x * 0.70710678118654752440));
      double pdf = exp(-0.5 * x * x) * 0.39894228040143267794;
      return cdf + x * pdf;
    }
    case EDGE_UNARY_GELU_TANH: {
      const double c = 0.79788456080286535588, k = 0.044715;
      double t = tanh(c * (x + k * x * x * x));
      return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * c * (1.0 + 3.0 * k * x * x);
    }
    case EDGE_UNARY_ERF: return 1.12837916709551257390 * exp(-x * x);
    case EDGE_UNARY_EXP: return exp(x);
    case EDGE_UNARY_LOG: return 1.0 / x;
    case EDGE_UNARY_SQRT: return 0.5 / sqrt(x);
    case EDGE_UNARY_RSQRT: return -0.5 / (x * sqrt(x));
    case EDGE_UNARY_RECIPROCAL: return -1.0 / (x * x);
    case EDGE_UNARY_NEG: return -1.0;
    case EDGE_UNARY_ABS: return x > 0.0 ? 1.0 : (x < 0.0 ? -1.0 : 0.0);
    case EDGE_UNARY_SOFTPLUS: return x >= 0.0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    case EDGE_UNARY_SIN: return cos(x);
    case EDGE_UNARY_COS: return -sin(x);
    case EDGE_UNARY_SQUARE: return 2.0 * x;
    case EDGE_UNARY_ASIN: return 1.0 / sqrt(1.0 - x * x);
    case EDGE_UNARY_ACOS: return -1.0 / sqrt(1.0 - x * x);
    case EDGE_UNARY_ATAN: return 1.0 / (1.0 + x * x);
    case EDGE_UNARY_SILU: {
      double s = x >= 0.0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
      return s * (1.0 + x * (1.0 - s));
    }
    default: return 0.0;
  }
}

static edge_status activation_grad_prepare(edge_context *ctx, edge_node *node) {
  const char *op = "ACTIVATION_GRAD";
  edge_status status = edge_training_check_arity(ctx, node, op, 2, 2, 1, 1, false);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *dy = edge_op_input(ctx, node, 1), *dx = edge_op_output(ctx, node, 0);
  if ((status = edge_training_check_float(ctx, op, "input", x)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "gradient", dy)) != EDGE_OK ||
      (status = edge_training_check_float(ctx, op, "output", dx)) != EDGE_OK ||
      (status = edge_training_check_same_shape(ctx, op, "input", x, "gradient", dy)) != EDGE_OK)
    return status;
  edge_unary_kind f = node->options.unary.op;
  if (!has_gradient(f))
    return edge_fail(ctx, EDGE_INVALID_MODEL, "%s '%s': %s has no gradient", op, edge_tensor_name(dx),
                     (unsigned)f < EDGE_UNARY_COUNT_ ? edge_unary_names[f] : "this unary op");
  return edge_set_shape(ctx, dx, x->rank, x->shape);
}

typedef struct {
  edge_unary_kind op;
  edge_f32_vgrad_ukernel relu_grad; /* NULL: the loop */
  double alpha, beta;
  const float *x, *dy;
  float *dx;
  int64_t count;
} activation_grad_job;

static void activation_grad_blocks(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const activation_grad_job *job = arg;
  int64_t first = begin * EDGE_TRAINING_BLOCK, last = end * EDGE_TRAINING_BLOCK;
  if (last > job->count) last = job->count;
  const float *x = job->x, *dy = job->dy;
  float *dx = job->dx;
  switch (job->op) { /* the common ones as plain loops the compiler vectorises */
    case EDGE_UNARY_RELU:
      if (job->relu_grad) {
        job->relu_grad((size_t)(last - first), x + first, dy + first, dx + first);
        return;
      }
      for (int64_t i = first; i < last; ++i) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f * dy[i];
      return;
    case EDGE_UNARY_IDENTITY:
      for (int64_t i = first; i < last; ++i) dx[i] = dy[i];
      return;
    default:
      for (int64_t i = first; i < last; ++i)
        dx[i] = (float)((double)dy[i] * derivative(job->op, x[i], job->alpha, job->beta));
  }
}

static edge_status activation_grad_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0);
  activation_grad_job job = {node->options.unary.op, edge_kernels()->vector.relu_grad, node->options.unary.alpha, node->options.unary.beta, x->data,
                             edge_op_input(ctx, node, 1)->data, edge_op_output(ctx, node, 0)->data,
                             edge_num_elements(x->rank, x->shape)};
  int64_t blocks = (job.count + EDGE_TRAINING_BLOCK - 1) / EDGE_TRAINING_BLOCK;
  edge_nd_parallel(ctx, blocks, 2, activation_grad_blocks, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_activation_grad = {activation_grad_prepare, activation_grad_eval, NULL};
