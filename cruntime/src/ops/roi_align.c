/* ROI_ALIGN (ONNX RoiAlign) on NHWC: x [N, H, W, C], rois [R, 4] as (x1, y1, x2, y2), batch_indices
 * [R] -> y [R, OH, OW, C]. Each output bin averages (or, mode MAX, takes the largest of) a grid of
 * bilinear samples inside its share of the region, with onnxruntime's rules: coordinates scaled by
 * spatial_scale and shifted by -0.5 for half_pixel (output_half_pixel instead makes a region at
 * least 1x1); sampling_ratio 0 takes ceil(region / output) samples per bin and axis; a sample more
 * than one pixel outside the input counts as 0, one nearer is clamped to the edge; MAX keeps the
 * largest weighted corner of each sample (onnxruntime's definition).
 *
 * The rois and batch indices are data: eval checks every batch index against N and every
 * coordinate for being finite before computing, and stops with EDGE_RUNTIME_ERROR naming the
 * first bad one; samples always read clamped positions, so nothing is read outside x. A bin that
 * would take more than 2^20 samples (a file's sampling_ratio, or a huge region) is refused the same
 * way, so no input makes an invoke run without end.
 * Work is split over the output rows (roi, bin row); each sample's channel loop (innermost and
 * contiguous in NHWC) runs in the vector kernel f32-bilinear where the ISA has one, else in the
 * scalar loops here, which are the reference it is tested against. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "broadcast.h"
#include "kernels/config.h"
#include "ops.h"

#define ROI_ALIGN_MAX_SAMPLES (1 << 20)

static int64_t batch_at(const edge_tensor *indices, int64_t i) {
  return indices->dtype == EDGE_INT32 ? ((const int32_t *)indices->data)[i] : ((const int64_t *)indices->data)[i];
}

static edge_status roi_align_prepare(edge_context *ctx, edge_node *node) {
  edge_status status = edge_op_check_arity(ctx, node, "ROI_ALIGN", 3, 3, 1, 1);
  if (status != EDGE_OK) return status;
  edge_tensor *x = edge_op_input(ctx, node, 0), *rois = edge_op_input(ctx, node, 1);
  edge_tensor *indices = edge_op_input(ctx, node, 2), *y = edge_op_output(ctx, node, 0);
  const char *name = edge_tensor_name(y);
  if (x->dtype != EDGE_FLOAT32 || rois->dtype != EDGE_FLOAT32 || y->dtype != EDGE_FLOAT32)
    return edge_fail(ctx, EDGE_UNSUPPORTED, "ROI_ALIGN '%s': x '%s' is %s and rois '%s' %s; float32 only", name,
                     edge_tensor_name(x), edge_dtype_name(x->dtype), edge_tensor_name(rois), edge_dtype_name(rois->dtype));
  if (indices->dtype != EDGE_INT32 && indices->dtype != EDGE_INT64)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "ROI_ALIGN '%s': batch indices '%s' are %s, expected int32 or int64",
                     name, edge_tensor_name(indices), edge_dtype_name(indices->dtype));
  if (x->rank != 4 || rois->rank != 2 || rois->shape[1] != 4 || indices->rank != 1 ||
      indices->shape[0] != rois->shape[0]) {
    char xs[96], rs[96], is[96];
    edge_format_shape(xs, sizeof xs, x->rank, x->shape);
    edge_format_shape(rs, sizeof rs, rois->rank, rois->shape);
    edge_format_shape(is, sizeof is, indices->rank, indices->shape);
    return edge_fail(ctx, EDGE_INVALID_MODEL,
                     "ROI_ALIGN '%s': x %s, rois %s and batch indices %s must be [N, H, W, C], [R, 4] and [R]", name,
                     xs, rs, is);
  }
  const edge_roi_align_options *o = &node->options.roi_align;
  if (o->output_height < 1 || o->output_width < 1 || o->sampling_ratio < 0 || (int)o->mode < 0 ||
      o->mode >= EDGE_ROI_ALIGN_COUNT_)
    return edge_fail(ctx, EDGE_INVALID_MODEL, "ROI_ALIGN '%s': output %dx%d, sampling_ratio %d or mode %d is invalid",
                     name, o->output_height, o->output_width, o->sampling_ratio, (int)o->mode);
  int64_t shape[4] = {rois->shape[0], o->output_height, o->output_width, x->shape[3]};
  return edge_set_shape(ctx, y, 4, shape);
}

typedef struct {
  const edge_roi_align_options *o;
  const edge_tensor *x, *rois, *indices, *y;
  edge_f32_bilinear_ukernel bilinear; /* the vector kernel; NULL: the scalar loops below */
} roi_align_job;

/* Accumulates (AVG) or maxes (MAX) the bilinear sample at (sy, sx) into out[0..C). */
static void sample(const roi_align_job *job, const float *image, float sy, float sx, float *out, bool first) {
  int64_t height = job->x->shape[1], width = job->x->shape[2], channels = job->x->shape[3];
  bool max = job->o->mode == EDGE_ROI_ALIGN_MAX;
  if (sy < -1.0f || sy > (float)height || sx < -1.0f || sx > (float)width) {
    /* Outside by more than a pixel: every corner weighs 0. */
    for (int64_t c = 0; c < channels; ++c)
      if (max) out[c] = first || out[c] < 0.0f ? 0.0f : out[c];
    return;
  }
  if (sy <= 0.0f) sy = 0.0f;
  if (sx <= 0.0f) sx = 0.0f;
  int64_t y0 = (int64_t)sy, x0 = (int64_t)sx, y1, x1;
  if (y0 >= height - 1) {
    y0 = y1 = height - 1;
    sy = (float)y0;
  } else {
    y1 = y0 + 1;
  }
  if (x0 >= width - 1) {
    x0 = x1 = width - 1;
    sx = (float)x0;
  } else {
    x1 = x0 + 1;
  }
  float ly = sy - (float)y0, lx = sx - (float)x0, hy = 1.0f - ly, hx = 1.0f - lx;
  float w00 = hy * hx, w01 = hy * lx, w10 = ly * hx, w11 = ly * lx;
  const float *p00 = image + (y0 * width + x0) * channels, *p01 = image + (y0 * width + x1) * channels;
  const float *p10 = image + (y1 * width + x0) * channels, *p11 = image + (y1 * width + x1) * channels;
  if (job->bilinear) {
    const float *corners[4] = {p00, p01, p10, p11};
    const float weights[4] = {w00, w01, w10, w11};
    job->bilinear((size_t)channels, corners, weights, out,
                  !max ? EDGE_BILINEAR_ADD : first ? EDGE_BILINEAR_MAX_FIRST : EDGE_BILINEAR_MAX);
    return;
  }
  if (!max) {
    for (int64_t c = 0; c < channels; ++c) out[c] += w00 * p00[c] + w01 * p01[c] + w10 * p10[c] + w11 * p11[c];
    return;
  }
  for (int64_t c = 0; c < channels; ++c) {
    float v = w00 * p00[c], t = w01 * p01[c];
    if (t > v) v = t;
    t = w10 * p10[c];
    if (t > v) v = t;
    t = w11 * p11[c];
    if (t > v) v = t;
    out[c] = first || v > out[c] ? v : out[c];
  }
}

/* The region of roi r in input coordinates: start y, start x, bin height, bin width, and the
 * sample grid per bin. */
typedef struct {
  float start_y, start_x, bin_h, bin_w;
  int64_t grid_h, grid_w;
} region;

static region region_of(const roi_align_job *job, int64_t r) {
  const edge_roi_align_options *o = job->o;
  const float *roi = (const float *)job->rois->data + 4 * r;
  float offset = o->half_pixel ? 0.5f : 0.0f, scale = o->spatial_scale;
  region g;
  g.start_x = roi[0] * scale - offset;
  g.start_y = roi[1] * scale - offset;
  float w = roi[2] * scale - offset - g.start_x, h = roi[3] * scale - offset - g.start_y;
  if (!o->half_pixel) {
    if (w < 1.0f) w = 1.0f;
    if (h < 1.0f) h = 1.0f;
  }
  g.bin_h = h / (float)o->output_height;
  g.bin_w = w / (float)o->output_width;
  /* eval checked both below ROI_ALIGN_MAX_SAMPLES; an inverted region's negative count is 0. */
  float grid_h = o->sampling_ratio > 0 ? (float)o->sampling_ratio : ceilf(h / (float)o->output_height);
  float grid_w = o->sampling_ratio > 0 ? (float)o->sampling_ratio : ceilf(w / (float)o->output_width);
  g.grid_h = grid_h > 0.0f ? (int64_t)grid_h : 0;
  g.grid_w = grid_w > 0.0f ? (int64_t)grid_w : 0;
  return g;
}

static void roi_align_rows(void *arg, int64_t begin, int64_t end, int32_t thread) {
  (void)thread;
  const roi_align_job *job = arg;
  const edge_roi_align_options *o = job->o;
  int64_t channels = job->x->shape[3], image_size = job->x->shape[1] * job->x->shape[2] * channels;
  for (int64_t row = begin; row < end; ++row) {
    int64_t r = row / o->output_height, ph = row % o->output_height;
    region g = region_of(job, r);
    const float *image = (const float *)job->x->data + batch_at(job->indices, r) * image_size;
    int64_t count = g.grid_h * g.grid_w;
    for (int64_t pw = 0; pw < o->output_width; ++pw) {
      float *out = (float *)job->y->data + (row * o->output_width + pw) * channels;
      /* No samples: AVG gives 0, MAX the lowest float, as onnxruntime does. */
      for (int64_t c = 0; c < channels; ++c) out[c] = o->mode == EDGE_ROI_ALIGN_MAX && count == 0 ? -FLT_MAX : 0.0f;
      for (int64_t iy = 0; iy < g.grid_h; ++iy) {
        float sy = g.start_y + (float)ph * g.bin_h + ((float)iy + 0.5f) * g.bin_h / (float)g.grid_h;
        for (int64_t ix = 0; ix < g.grid_w; ++ix) {
          float sx = g.start_x + (float)pw * g.bin_w + ((float)ix + 0.5f) * g.bin_w / (float)g.grid_w;
          sample(job, image, sy, sx, out, iy == 0 && ix == 0);
        }
      }
      if (o->mode == EDGE_ROI_ALIGN_AVG && count > 0)
        for (int64_t c = 0; c < channels; ++c) out[c] /= (float)count;
    }
  }
}

static edge_status roi_align_eval(edge_context *ctx, edge_node *node) {
  edge_tensor *x = edge_op_input(ctx, node, 0), *rois = edge_op_input(ctx, node, 1);
  edge_tensor *indices = edge_op_input(ctx, node, 2), *y = edge_op_output(ctx, node, 0);
  roi_align_job job = {&node->options.roi_align, x, rois, indices, y, edge_kernels()->vector.bilinear};
  int64_t count = rois->shape[0], batches = x->shape[0];
  for (int64_t r = 0; r < count; ++r) {
    int64_t b = batch_at(indices, r);
    if (b < 0 || b >= batches)
      return edge_fail(ctx, EDGE_RUNTIME_ERROR,
                       "ROI_ALIGN '%s': batch index %lld of roi %lld (in '%s') is out of range for the %lld images of "
                       "'%s'", edge_tensor_name(y), (long long)b, (long long)r, edge_tensor_name(indices), (long long)batches,
                       edge_tensor_name(x));
    const float *roi = (const float *)rois->data + 4 * r;
    for (int32_t k = 0; k < 4; ++k)
      if (!isfinite(roi[k]) || fabsf(roi[k] * node->options.roi_align.spatial_scale) > 1e30f)
        return edge_fail(ctx, EDGE_RUNTIME_ERROR, "ROI_ALIGN '%s': roi %lld of '%s' has coordinate %d = %g", edge_tensor_name(y),
                         (long long)r, edge_tensor_name(rois), k, (double)roi[k]);
    /* The sample grid per bin, in float before any conversion: a file's sampling_ratio or a huge
     * region must not turn one invoke into an endless loop. */
    const edge_roi_align_options *o = job.o;
    float scale = o->spatial_scale, offset = o->half_pixel ? 0.5f : 0.0f;
    float h = (roi[3] * scale - offset) - (roi[1] * scale - offset), w = (roi[2] * scale - offset) - (roi[0] * scale - offset);
    float grid_h = o->sampling_ratio > 0 ? (float)o->sampling_ratio : ceilf(h / (float)o->output_height);
    float grid_w = o->sampling_ratio > 0 ? (float)o->sampling_ratio : ceilf(w / (float)o->output_width);
    if (grid_h > (float)ROI_ALIGN_MAX_SAMPLES || grid_w > (float)ROI_ALIGN_MAX_SAMPLES ||
        (grid_h > 0.0f && grid_w > 0.0f && grid_h * grid_w > (float)ROI_ALIGN_MAX_SAMPLES))
      return edge_fail(ctx, EDGE_RUNTIME_ERROR,
                       "ROI_ALIGN '%s': roi %lld of '%s' would take %g x %g samples per bin; at most %d in all",
                       edge_tensor_name(y), (long long)r, edge_tensor_name(rois), (double)grid_h, (double)grid_w,
                       ROI_ALIGN_MAX_SAMPLES);
  }
  int64_t rows = count * job.o->output_height;
  if (rows && x->shape[3]) edge_nd_parallel(ctx, rows, 4, roi_align_rows, &job);
  return EDGE_OK;
}

const edge_op_registration edge_op_roi_align = {roi_align_prepare, roi_align_eval, NULL};
