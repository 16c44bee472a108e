/* TensorBoard event files: TensorFlow's record framing around hand-encoded
 * Event protos (see tfevents_pb.h for why hand-encoded).
 *
 * Record: u64 length (LE), masked crc32c(length bytes), payload, masked
 * crc32c(payload). The event file is append-only and new (never replaces
 * anything), so it does not go through the atomic-replace helper; instead each
 * record is written whole with one write(2), and a failed write is truncated
 * back to the last complete record.
 *
 * Scalars are written as TF2/Keras write them (tensor + "scalars" plugin
 * metadata), not as the legacy simple_value: TensorBoard shows both the same,
 * but the TF2 form is what Keras' own files hold, so loupe runs and Keras runs
 * go through the same code path in TensorBoard and in any script that reads
 * both (tensorboard's EventAccumulator puts simple_value in .Scalars() and the
 * TF2 form in .Tensors(); a reader written for Keras files finds ours where it
 * finds Keras'). data_class SCALAR lets TensorBoard skip its legacy migration. */
#define _GNU_SOURCE
#include "log/log.h"
#include "log/tfevents_pb.h"
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Field numbers from tensorflow/core/util/event.proto, framework/summary.proto,
 * tensor.proto, tensor_shape.proto, types.proto. */
enum {
    EVENT_WALL_TIME = 1, EVENT_STEP = 2, EVENT_FILE_VERSION = 3, EVENT_SUMMARY = 5,
    SUMMARY_VALUE = 1,
    VALUE_TAG = 1, VALUE_HISTO = 5, VALUE_TENSOR = 8, VALUE_METADATA = 9,
    META_PLUGIN_DATA = 1, META_DATA_CLASS = 4,
    PLUGIN_NAME = 1, PLUGIN_CONTENT = 2,
    TENSOR_DTYPE = 1, TENSOR_SHAPE = 2, TENSOR_FLOAT_VAL = 5, TENSOR_STRING_VAL = 8,
    SHAPE_DIM = 2, DIM_SIZE = 1,
    HISTO_MIN = 1, HISTO_MAX = 2, HISTO_NUM = 3, HISTO_SUM = 4, HISTO_SUM_SQUARES = 5,
    HISTO_BUCKET_LIMIT = 6, HISTO_BUCKET = 7,
};
enum { DT_FLOAT = 1, DT_STRING = 7 };
enum { DATA_CLASS_SCALAR = 1, DATA_CLASS_TENSOR = 2, DATA_CLASS_BLOB_SEQUENCE = 3 };

struct lp_tb_writer {
    int fd;
    char *path;
    off_t size; /* bytes of complete records in the file */
};

static atomic_int g_file_counter; /* TensorFlow's per-process file id */

static double wall_time(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *lp_tb_path(const lp_tb_writer *w) { return w->path; }

/* Frames payload as one record and appends it with one write. */
static lp_status write_record(lp_tb_writer *w, const lp_pb *payload) {
    if (payload->oom) return lp_fail(LP_ERR_NOMEM, "%s: out of memory while encoding an event", w->path);
    lp_pb rec = {0};
    uint8_t len[8];
    uint64_t n = payload->len;
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(n >> (8 * i));
    uint32_t crc_len = lp_crc32c_mask(lp_crc32c(0, len, 8));
    uint32_t crc_data = lp_crc32c_mask(lp_crc32c(0, payload->data, payload->len));
    uint8_t c[4];
    lp_pb_raw(&rec, len, 8);
    for (int i = 0; i < 4; i++) c[i] = (uint8_t)(crc_len >> (8 * i));
    lp_pb_raw(&rec, c, 4);
    lp_pb_raw(&rec, payload->data, payload->len);
    for (int i = 0; i < 4; i++) c[i] = (uint8_t)(crc_data >> (8 * i));
    lp_pb_raw(&rec, c, 4);
    if (rec.oom) {
        lp_pb_free(&rec);
        return lp_fail(LP_ERR_NOMEM, "%s: out of memory while framing an event", w->path);
    }
    const uint8_t *p = rec.data;
    size_t left = rec.len;
    while (left > 0) {
        ssize_t k = write(w->fd, p, left);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            int e = k < 0 ? errno : EIO;
            lp_pb_free(&rec);
            /* Cut a torn record off so later records stay readable. */
            if (ftruncate(w->fd, w->size) != 0) { /* nothing more to do */
            }
            return lp_fail(LP_ERR_IO, "%s: write failed (%s); the event file keeps its complete records", w->path,
                           strerror(e));
        }
        p += k;
        left -= (size_t)k;
    }
    w->size += (off_t)rec.len;
    lp_pb_free(&rec);
    return LP_OK;
}

/* Event{wall_time, step, summary{value: <value>}}. Fields are written in
 * field-number order, as protobuf libraries serialise them. */
static lp_status write_value(lp_tb_writer *w, int64_t step, const lp_pb *value) {
    lp_pb summary = {0}, event = {0};
    lp_pb_message(&summary, SUMMARY_VALUE, value);
    lp_pb_double(&event, EVENT_WALL_TIME, wall_time());
    if (step != 0) lp_pb_varint(&event, EVENT_STEP, (uint64_t)step);
    lp_pb_message(&event, EVENT_SUMMARY, &summary);
    lp_status s = write_record(w, &event);
    lp_pb_free(&summary);
    lp_pb_free(&event);
    return s;
}

/* SummaryMetadata{plugin_data{plugin_name, content}, data_class} */
static void put_metadata(lp_pb *value, const char *plugin, const lp_pb *content, int data_class) {
    lp_pb plugin_data = {0}, meta = {0};
    lp_pb_string(&plugin_data, PLUGIN_NAME, plugin);
    if (content && content->len) lp_pb_message(&plugin_data, PLUGIN_CONTENT, content);
    lp_pb_message(&meta, META_PLUGIN_DATA, &plugin_data);
    lp_pb_varint(&meta, META_DATA_CLASS, (uint64_t)data_class);
    lp_pb_message(value, VALUE_METADATA, &meta);
    lp_pb_free(&plugin_data);
    lp_pb_free(&meta);
}

/* TensorShapeProto{dim{size}...}; ndim 0 is a scalar (an empty message). */
static void put_shape(lp_pb *tensor, const int64_t *dims, int ndim) {
    lp_pb shape = {0};
    for (int i = 0; i < ndim; i++) {
        lp_pb dim = {0};
        lp_pb_varint(&dim, DIM_SIZE, (uint64_t)dims[i]);
        lp_pb_message(&shape, SHAPE_DIM, &dim);
        lp_pb_free(&dim);
    }
    lp_pb_message(tensor, TENSOR_SHAPE, &shape);
    lp_pb_free(&shape);
}

static lp_status check_tag(const lp_tb_writer *w, const char *tag) {
    if (!w) return lp_fail(LP_ERR_ARG, "tensorboard: writer is NULL");
    if (!tag || !*tag) return lp_fail(LP_ERR_ARG, "%s: empty tag; give every summary a name", w->path);
    return LP_OK;
}

lp_status lp_tb_open(const char *logdir, lp_tb_writer **out) {
    *out = NULL;
    if (!logdir || !*logdir) return lp_fail(LP_ERR_ARG, "tensorboard: empty log directory");
    lp_status s = lp_mkdirs(logdir);
    if (s) return lp_fail_context(s, "tensorboard");
    char host[256] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    for (char *c = host; *c; c++)
        if (*c == '/') *c = '_';
    lp_tb_writer *w = lp_calloc(1, sizeof *w);
    if (!w) return LP_ERR_NOMEM;
    w->fd = -1;
    size_t cap = strlen(logdir) + strlen(host) + 96;
    w->path = lp_malloc(cap);
    if (!w->path) {
        free(w);
        return LP_ERR_NOMEM;
    }
    /* O_EXCL: never append to someone else's file; a clash (another process
     * with our pid in a shared folder) takes the next counter value. */
    for (int attempt = 0; attempt < 100 && w->fd < 0; attempt++) {
        long long t = (long long)time(NULL);
        snprintf(w->path, cap, "%s/events.out.tfevents.%010lld.%s.%ld.%d.v2", logdir, t, host, (long)getpid(),
                 atomic_fetch_add(&g_file_counter, 1));
        w->fd = open(w->path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
        if (w->fd < 0 && errno != EEXIST) break;
    }
    if (w->fd < 0) {
        s = lp_fail(LP_ERR_IO, "%s: cannot create event file (%s); check that the run folder is writable", w->path,
                    strerror(errno));
        free(w->path);
        free(w);
        return s;
    }
    lp_pb event = {0};
    lp_pb_double(&event, EVENT_WALL_TIME, wall_time());
    lp_pb_string(&event, EVENT_FILE_VERSION, "brain.Event:2");
    s = write_record(w, &event);
    lp_pb_free(&event);
    if (s) {
        close(w->fd);
        unlink(w->path);
        free(w->path);
        free(w);
        return s;
    }
    *out = w;
    return LP_OK;
}

lp_status lp_tb_scalar(lp_tb_writer *w, const char *tag, int64_t step, double value) {
    lp_status s = check_tag(w, tag);
    if (s) return s;
    lp_pb v = {0}, tensor = {0};
    float f = (float)value;
    lp_pb_string(&v, VALUE_TAG, tag);
    lp_pb_varint(&tensor, TENSOR_DTYPE, DT_FLOAT);
    put_shape(&tensor, NULL, 0);
    lp_pb_packed_float(&tensor, TENSOR_FLOAT_VAL, &f, 1);
    lp_pb_message(&v, VALUE_TENSOR, &tensor);
    put_metadata(&v, "scalars", NULL, DATA_CLASS_SCALAR);
    s = write_value(w, step, &v);
    lp_pb_free(&v);
    lp_pb_free(&tensor);
    return s;
}

/* ---- histograms -------------------------------------------------------- */
#define HIST_LIMITS_MAX 1600
static double g_limits[HIST_LIMITS_MAX];
static int g_nlimits;
/* Fast bucket lookup for floats: the top 16 bits of a float (sign, exponent,
 * 7 mantissa bits) name a cell 2^-7 (0.8%) wide in relative terms; limits are
 * 10% apart, so a cell holds at most one limit and one comparison finishes
 * the search. g_cell[key] = upper_bound of the cell's smallest value, with
 * CELL_SEARCH marking the few cells that need a full binary search. */
#define CELL_SEARCH 0xffffu
static uint16_t g_cell[65536];
static pthread_once_t g_limits_once = PTHREAD_ONCE_INIT;

/* Index of the first limit > x (std::upper_bound, as TF's Histogram::Add). */
static int upper_bound(double x) {
    int lo = 0, hi = g_nlimits; /* g_nlimits when x >= DBL_MAX, which a float never reaches */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (g_limits[mid] > x) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

static float bits_to_float(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* TensorFlow's InitDefaultBucketsInner (core/lib/histogram/histogram.cc). */
static void build_limits(void) {
    double pos[HIST_LIMITS_MAX / 2];
    int np = 0;
    for (double v = 1.0e-12; v < 1.0e20; v *= 1.1) pos[np++] = v;
    pos[np++] = DBL_MAX;
    int k = 0;
    for (int i = np - 1; i >= 0; i--) g_limits[k++] = -pos[i];
    g_limits[k++] = 0.0;
    for (int i = 0; i < np; i++) g_limits[k++] = pos[i];
    g_nlimits = k;
    for (uint32_t key = 0; key < 65536; key++) {
        float a = bits_to_float(key << 16), b = bits_to_float((key << 16) | 0xffffu);
        if (!isfinite(a) || !isfinite(b)) {
            g_cell[key] = CELL_SEARCH;
            continue;
        }
        double lo = fmin(a, b), hi = fmax(a, b);
        int ul = upper_bound(lo), uh = upper_bound(hi);
        g_cell[key] = uh - ul <= 1 ? (uint16_t)ul : CELL_SEARCH;
    }
}

static int bucket_index(float x) {
    uint32_t b;
    memcpy(&b, &x, 4);
    unsigned c = g_cell[b >> 16];
    if (c == CELL_SEARCH) return upper_bound(x);
    return (int)c + ((double)x >= g_limits[c]);
}

lp_status lp_tb_histogram(lp_tb_writer *w, const char *tag, int64_t step, const float *values, size_t n) {
    lp_status s = check_tag(w, tag);
    if (s) return s;
    if (n && !values) return lp_fail(LP_ERR_ARG, "%s: histogram '%s': values is NULL", w->path, tag);
    pthread_once(&g_limits_once, build_limits);
    double *counts = lp_calloc((size_t)g_nlimits, sizeof *counts);
    double *out_limits = lp_malloc(sizeof(double) * (size_t)g_nlimits);
    double *out_counts = lp_malloc(sizeof(double) * (size_t)g_nlimits);
    if (!counts || !out_limits || !out_counts) {
        free(counts);
        free(out_limits);
        free(out_counts);
        return LP_ERR_NOMEM;
    }
    double mn = DBL_MAX, mx = -DBL_MAX, num = 0, sum = 0, sumsq = 0;
    for (size_t i = 0; i < n; i++) {
        double x = values[i];
        if (!isfinite(x)) continue;
        counts[bucket_index(values[i])] += 1.0;
        if (x < mn) mn = x;
        if (x > mx) mx = x;
        num += 1.0;
        sum += x;
        sumsq += x * x;
    }
    /* TF's Histogram::EncodeToProto(preserve_zero_buckets = false). */
    int k = 0;
    for (int i = 0; i < g_nlimits;) {
        double end = g_limits[i], count = counts[i];
        i++;
        if (count <= 0.0) {
            while (i < g_nlimits && counts[i] <= 0.0) {
                end = g_limits[i];
                count = counts[i];
                i++;
            }
        }
        out_limits[k] = end;
        out_counts[k] = count;
        k++;
    }
    lp_pb v = {0}, h = {0};
    lp_pb_double(&h, HISTO_MIN, mn);
    lp_pb_double(&h, HISTO_MAX, mx);
    if (num != 0.0) lp_pb_double(&h, HISTO_NUM, num); /* proto3 leaves zeros out */
    if (sum != 0.0) lp_pb_double(&h, HISTO_SUM, sum);
    if (sumsq != 0.0) lp_pb_double(&h, HISTO_SUM_SQUARES, sumsq);
    lp_pb_packed_double(&h, HISTO_BUCKET_LIMIT, out_limits, (size_t)k);
    lp_pb_packed_double(&h, HISTO_BUCKET, out_counts, (size_t)k);
    lp_pb_string(&v, VALUE_TAG, tag);
    lp_pb_message(&v, VALUE_HISTO, &h);
    s = write_value(w, step, &v);
    lp_pb_free(&v);
    lp_pb_free(&h);
    free(counts);
    free(out_limits);
    free(out_counts);
    return s;
}

/* ---- images ------------------------------------------------------------ */
lp_status lp_tb_image_png(lp_tb_writer *w, const char *tag, int64_t step, const uint8_t *png, size_t png_size,
                          int height, int width, int channels) {
    lp_status s = check_tag(w, tag);
    if (s) return s;
    if (!png || png_size < 8 || memcmp(png, "\x89PNG\r\n\x1a\n", 8) != 0)
        return lp_fail(LP_ERR_ARG, "%s: image '%s' is not a PNG", w->path, tag);
    if (height <= 0 || width <= 0 || (channels != 1 && channels != 3 && channels != 4))
        return lp_fail(LP_ERR_ARG, "%s: image '%s': bad size %dx%dx%d (need positive size, 1, 3 or 4 channels)",
                       w->path, tag, height, width, channels);
    char ws[24], hs[24];
    snprintf(ws, sizeof ws, "%d", width);
    snprintf(hs, sizeof hs, "%d", height);
    lp_pb v = {0}, tensor = {0};
    int64_t dim = 3;
    lp_pb_string(&v, VALUE_TAG, tag);
    lp_pb_varint(&tensor, TENSOR_DTYPE, DT_STRING);
    put_shape(&tensor, &dim, 1);
    lp_pb_string(&tensor, TENSOR_STRING_VAL, ws);
    lp_pb_string(&tensor, TENSOR_STRING_VAL, hs);
    lp_pb_bytes(&tensor, TENSOR_STRING_VAL, png, png_size);
    lp_pb_message(&v, VALUE_TENSOR, &tensor);
    put_metadata(&v, "images", NULL, DATA_CLASS_BLOB_SEQUENCE); /* ImagePluginData{version 0} encodes empty */
    s = write_value(w, step, &v);
    lp_pb_free(&v);
    lp_pb_free(&tensor);
    return s;
}

lp_status lp_tb_image_rgb(lp_tb_writer *w, const char *tag, int64_t step, const uint8_t *rgb, int height, int width) {
    lp_status s = check_tag(w, tag);
    if (s) return s;
    uint8_t *png;
    size_t size;
    s = lp_png_encode(rgb, height, width, 3, &png, &size);
    if (s) return lp_fail_context(s, "%s: image '%s'", w->path, tag);
    s = lp_tb_image_png(w, tag, step, png, size, height, width, 3);
    free(png);
    return s;
}

/* ---- PR curves ---------------------------------------------------------- */
lp_status lp_tb_pr_curve(lp_tb_writer *w, const char *tag, int64_t step, const float *probs, const uint8_t *labels,
                         size_t n, int num_thresholds) {
    lp_status s = check_tag(w, tag);
    if (s) return s;
    if (num_thresholds == 0) num_thresholds = 200;
    if (num_thresholds < 2 || num_thresholds > 10000)
        return lp_fail(LP_ERR_ARG, "%s: pr curve '%s': num_thresholds %d not in 2..10000", w->path, tag, num_thresholds);
    if (n && (!probs || !labels)) return lp_fail(LP_ERR_ARG, "%s: pr curve '%s': probs or labels is NULL", w->path, tag);
    int T = num_thresholds;
    double *tp = lp_calloc((size_t)T, sizeof *tp), *fp = lp_calloc((size_t)T, sizeof *fp);
    float *data = lp_malloc(sizeof(float) * 6 * (size_t)T);
    if (!tp || !fp || !data) {
        free(tp);
        free(fp);
        free(data);
        return LP_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        float p = probs[i];
        if (!(p >= 0.0f)) p = 0.0f; /* NaN and negatives */
        if (p > 1.0f) p = 1.0f;
        int b = (int)floor((double)p * (T - 1));
        if (labels[i]) tp[b] += 1.0;
        else fp[b] += 1.0;
    }
    for (int t = T - 2; t >= 0; t--) { /* reverse cumulative sums */
        tp[t] += tp[t + 1];
        fp[t] += fp[t + 1];
    }
    for (int t = 0; t < T; t++) {
        double tn = fp[0] - fp[t], fn = tp[0] - tp[t];
        data[0 * T + t] = (float)tp[t];
        data[1 * T + t] = (float)fp[t];
        data[2 * T + t] = (float)tn;
        data[3 * T + t] = (float)fn;
        data[4 * T + t] = (float)(tp[t] / fmax(1e-7, tp[t] + fp[t]));
        data[5 * T + t] = (float)(tp[t] / fmax(1e-7, tp[t] + fn));
    }
    lp_pb v = {0}, tensor = {0}, content = {0};
    int64_t dims[2] = {6, T};
    lp_pb_varint(&content, 2, (uint64_t)T); /* PrCurvePluginData{version 0 (default, omitted), num_thresholds} */
    lp_pb_string(&v, VALUE_TAG, tag);
    lp_pb_varint(&tensor, TENSOR_DTYPE, DT_FLOAT);
    put_shape(&tensor, dims, 2);
    lp_pb_packed_float(&tensor, TENSOR_FLOAT_VAL, data, 6 * (size_t)T);
    lp_pb_message(&v, VALUE_TENSOR, &tensor);
    put_metadata(&v, "pr_curves", &content, DATA_CLASS_TENSOR);
    s = write_value(w, step, &v);
    lp_pb_free(&v);
    lp_pb_free(&tensor);
    lp_pb_free(&content);
    free(tp);
    free(fp);
    free(data);
    return s;
}

/* ---- flush, close -------------------------------------------------------- */
lp_status lp_tb_flush(lp_tb_writer *w) {
    if (!w) return lp_fail(LP_ERR_ARG, "tensorboard: writer is NULL");
    if (fsync(w->fd) != 0) return lp_fail(LP_ERR_IO, "%s: fsync failed (%s)", w->path, strerror(errno));
    return LP_OK;
}

void lp_tb_close(lp_tb_writer *w) {
    if (!w) return;
    fsync(w->fd);
    close(w->fd);
    free(w->path);
    free(w);
}
