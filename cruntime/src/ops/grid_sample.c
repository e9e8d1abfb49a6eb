/* GRID_SAMPLE (ONNX GridSample) on channels-last x: x [N, S1..Sk, C] with k = 1, 2 or 3 spatial
 * dims, grid [N, O1..Ok, k] -> y [N, O1..Ok, C]. grid's last axis lists the coordinates from the
 * last spatial dim to the first (x, y, z), each normalised to [-1, 1]; it is denormalised per dim,
 * rounded half to even for NEAREST, and a coordinate past the input's extent (the corner pixels'
 * centres under align_corners, else their outer edges) is clamped to the edge pixels (BORDER) or
 * mirrored back into the extent (REFLECTION) before the taps are taken, as ONNX's reference does.
 * Each dim then gives 1 (NEAREST), 2 (LINEAR) or 4 (CUBIC, Keys' kernel with A = -0.75) taps with
 * their weights; a tap outside the input reads 0 (ZEROS), the edge (BORDER) or the mirrored position
 * (REFLECTION). The output is the sum over every combination of taps of the product of their
 * weights times the channel vector.
 *
 * The grid is data: a coordinate that is NaN, or infinite under REFLECTION, gives NaN at that
 * position; every tap index is bounded before use, so no grid value reads outside x. Work is split
 * over the output positions; the channel loop is innermost and contiguous. */
#include <math.h>
#include <string.h>

#include "broadcast.h"
#include "ops.h"

#define GRID_MAX_DIMS 3
#define GRID_MAX_TAPS 4

static edge_status grid_sample_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "GRID_SAMPLE", 2, 2, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *grid = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  const char *name = edge_tensor_name(y);
  if (x->dtype != EDGE_FLOAT32 || grid->dtype != EDGE_FLOAT32 || y->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "GRID_SAMPLE '%s': x '%s' is %s and grid '%s' %s; float32 only", name,
                     edge_tensor_name(x), edge_dtype_name(x->dtype), edge_tensor_name(grid),
                     edge_dtype_name(grid->dtype));
  int32_t dims = x->rank - 2;
  if (dims < 1 || dims > GRID_MAX_DIMS || grid->rank != x->rank || grid->shape[0] != x->shape[0] ||
      grid->shape[grid->rank - 1] != dims) {
    char xs[96], gs[96];
    edge_format_shape(xs, sizeof xs, x->rank, x->shape);
    edge_format_shape(gs, sizeof gs, grid->rank, grid->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "GRID_SAMPLE '%s': x %s and grid %s must be [N, S1..Sk, C] and [N, O1..Ok, k] with k = 1, 2 or 3",
                     name, xs, gs);
  }
  for (int32_t d = 1; d <= dims; ++d)
    if (x->shape[d] == 0)
      return edge_fail(ctx, EDGE_INVALID_MODEL, "GRID_SAMPLE '%s': x '%s' has no pixels along spatial dim %d", name,
                       edge_tensor_name(x), d - 1);
  const edge_grid_sample_options *o = &node->options.grid_sample;
  if ((int)o->mode < 0 || o->mode >= EDGE_RESIZE_COUNT_ || (int)o->padding < 0 ||
      o->padding >= EDGE_GRID_PADDING_COUNT_)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "GRID_SAMPLE '%s': mode %d or padding %d is invalid", name, (int)o->mode,
                     (int)o->padding);
  int64_t shape[EDGE_MAX_RANK];
  for (int32_t d = 0; d <= dims; ++d) shape[d] = grid->shape[d];
  shape[dims + 1] = x->shape[x->rank - 1];
  return edge_set_shape(ctx, y, x->rank, shape);
}

typedef struct {
  const edge_grid_sample_options *o;
  const edge_tensor *x, *grid, *y;
  int32_t dims;
} grid_sample_job;

/* Mirrors v into [low, high] (the extent's two ends) as often as needed: the period is twice the
 * extent. An empty extent (one pixel, align_corners) gives low. */
static float reflect(float v, float low, float high) {
  float extent = high - low;
  if (extent <= 0.0f) return low;
  if (v < low) {
    float r = fmodf(low - v, 2.0f * extent);
    return r <= extent ? low + r : high - (r - extent);
  }
  if (v > high) {
    float r = fmodf(v - high, 2.0f * extent);
    return r <= extent ? high - r : low + (r - extent);
  }
  return v;
}

static void cubic_weights(float t, float w[4]) {
  const float a = -0.75f;
  float t1 = t + 1.0f, u = 1.0f - t, u1 = 2.0f - t;
  w[0] = ((a * t1 - 5.0f * a) * t1 + 8.0f * a) * t1 - 4.0f * a;
  w[1] = ((a + 2.0f) * t - (a + 3.0f)) * t * t + 1.0f;
  w[2] = ((a + 2.0f) * u - (a + 3.0f)) * u * u + 1.0f;
  w[3] = ((a * u1 - 5.0f * a) * u1 + 8.0f * a) * u1 - 4.0f * a;
}

/* One dim's taps for coordinate g (normalised) over size pixels: their element offsets (index times
 * stride, -1 for a tap outside under ZEROS, which reads nothing) and weights. Returns the tap count,
 * or 0 for a coordinate that gives NaN. */
static int32_t taps_of(const edge_grid_sample_options *o, float g, int64_t size, int64_t stride,
                       int64_t offsets[GRID_MAX_TAPS], float weights[GRID_MAX_TAPS]) {
  float v = o->align_corners ? (g + 1.0f) / 2.0f * (float)(size - 1) : ((g + 1.0f) * (float)size - 1.0f) / 2.0f;
  if (o->mode == EDGE_RESIZE_NEAREST) v = nearbyintf(v);
  float low = o->align_corners ? 0.0f : -0.5f, high = o->align_corners ? (float)(size - 1) : (float)size - 0.5f;
  if (o->padding == EDGE_GRID_PADDING_BORDER) {
    /* Only past the extent: a CUBIC coordinate within half a pixel of it keeps its fraction. */
    if (v < low || v > high) v = v < 0.0f ? 0.0f : (float)(size - 1);
  } else if (o->padding == EDGE_GRID_PADDING_REFLECTION) {
    if (!isfinite(v)) return 0;
    v = reflect(v, low, high);
  }
  if (isnan(v)) return 0;
  /* Past these bounds every tap is outside (only ZEROS gets here with such a v), so the clamp keeps
   * the result and the conversions below in range. */
  if (v < -8.0f) v = -8.0f;
  if (v > (float)size + 8.0f) v = (float)size + 8.0f;
  int32_t count;
  int64_t first;
  if (o->mode == EDGE_RESIZE_NEAREST) {
    count = 1;
    first = (int64_t)v;
    weights[0] = 1.0f;
  } else {
    float base = floorf(v), t = v - base;
    if (o->mode == EDGE_RESIZE_LINEAR) {
      count = 2;
      first = (int64_t)base;
      weights[0] = 1.0f - t;
      weights[1] = t;
    } else {
      count = 4;
      first = (int64_t)base - 1;
      cubic_weights(t, weights);
    }
  }
  for (int32_t k = 0; k < count; ++k) {
    int64_t i = first + k;
    if (i < 0 || i >= size) {
      if (o->padding == EDGE_GRID_PADDING_ZEROS) {
        offsets[k] = -1;
        continue;
      } else if (o->padding == EDGE_GRID_PADDING_BORDER) {
        i = i < 0 ? 0 : size - 1;
      } else {
        i = (int64_t)reflect((float)i, low, high);
        i = i < 0 ? 0 : i >= size ? size - 1 : i;
      }
    }
    offsets[k] = i * stride;
  }
  return count;
}

static void grid_sample_positions(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const grid_sample_job *job = arg;
  const edge_tensor *x = job->x;
  int32_t dims = job->dims;
  int64_t channels = x->shape[x->rank - 1], positions = 1, image = channels, strides[GRID_MAX_DIMS];
  for (int32_t d = dims - 1; d >= 0; --d) {
    strides[d] = image;
    image *= x->shape[d + 1];
  }
  for (int32_t d = 0; d < dims; ++d) positions *= job->grid->shape[d + 1];
  const float *grid = (const float *)job->grid->data;
  for (int64_t p = begin; p < end; ++p) {
    const float *source = (const float *)x->data + (p / positions) * image;
    float *out = (float *)job->y->data + p * channels;
    int64_t offsets[GRID_MAX_DIMS][GRID_MAX_TAPS];
    float weights[GRID_MAX_DIMS][GRID_MAX_TAPS];
    int32_t counts[GRID_MAX_DIMS], combinations = 1;
    bool nan = false;
    for (int32_t d = 0; d < dims; ++d) {
      /* grid's coordinates run from the last spatial dim to the first. */
      counts[d] = taps_of(job->o, grid[p * dims + (dims - 1 - d)], x->shape[d + 1], strides[d], offsets[d], weights[d]);
      nan = nan || counts[d] == 0;
      combinations *= counts[d];
    }
    if (nan) {
      for (int64_t c = 0; c < channels; ++c) out[c] = NAN;
      continue;
    }
    memset(out, 0, (size_t)channels * sizeof(float));
    for (int32_t k = 0; k < combinations; ++k) {
      int64_t offset = 0;
      float weight = 1.0f;
      bool outside = false;
      for (int32_t d = dims - 1, rest = k; d >= 0; --d) {
        int32_t tap = rest % counts[d];
        rest /= counts[d];
        outside = outside || offsets[d][tap] < 0;
        offset += offsets[d][tap];
        weight *= weights[d][tap];
      }
      if (outside) continue;
      const float *pixel = source + offset;
      for (int64_t c = 0; c < channels; ++c) out[c] += weight * pixel[c];
    }
  }
}

static edge_status grid_sample_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *grid = edge_op_input(ctx, node, 1), *y = edge_op_output(ctx, node, 0);
  grid_sample_job job = {&node->options.grid_sample, x, grid, y, x->rank - 2};
  int64_t positions = grid->shape[0];
  for (int32_t d = 0; d < job.dims; ++d) positions *= grid->shape[d + 1];
  if (positions && x->shape[x->rank - 1]) edge_nd_parallel(ctx, positions, 16, grid_sample_positions, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_grid_sample = {grid_sample_prepare, grid_sample_eval, NULL};
