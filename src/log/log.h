/* log: TensorBoard event files, PNG encoding, labelled image grids (and the
 * progress bar and CSV history). Knows core, libpng and zlib.
 *
 * TensorBoard writer, as the fit loop uses it (Keras' layout: one writer per
 * RUN/logs/train and RUN/logs/validation):
 *
 *     lp_tb_writer *tb;
 *     if (lp_tb_open("runs/seed/logs/train", &tb) != LP_OK) return ...;
 *     lp_tb_scalar(tb, "epoch_loss", epoch, loss);
 *     lp_tb_histogram(tb, "block1_conv1/kernel_0", epoch, w, n);
 *     lp_tb_flush(tb);                     // end of epoch: write + fsync
 *     lp_tb_close(tb);
 *
 * Every record goes to the file with one write(2) as soon as it is made, so a
 * killed process leaves every record it finished (at worst the one being
 * written is torn, and readers stop before it); lp_tb_flush adds fsync,
 * against power loss. A failed write is cut back to the last complete
 * record. A writer is not thread-safe: use one per thread or serialise calls.
 */
#ifndef LP_LOG_H
#define LP_LOG_H
#include "core/core.h"
#include "log/crc32c.h"
#include "data/png_write.h"

typedef struct lp_tb_writer lp_tb_writer;

/* Creates logdir (and parents) and the file
 * <logdir>/events.out.tfevents.<10-digit unix time>.<host>.<pid>.<n>.v2
 * (n counts the writers opened by this process, as TensorFlow does), whose
 * first record is Event{wall_time, file_version: "brain.Event:2"}. */
lp_status lp_tb_open(const char *logdir, lp_tb_writer **out);
/* The event file's path (owned by the writer). */
const char *lp_tb_path(const lp_tb_writer *w);

/* A scalar, written as TF2/Keras do: Summary.Value{tag, metadata{plugin_data
 * {plugin_name "scalars"}, data_class SCALAR}, tensor{DT_FLOAT, shape {},
 * float_val [value]}}. The value is stored as float32, like Keras' logs. */
lp_status lp_tb_scalar(lp_tb_writer *w, const char *tag, int64_t step, double value);

/* A HistogramProto (min, max, num, sum, sum_squares, bucket_limit, bucket)
 * over TensorFlow's default exponential buckets (limits +-1e-12 * 1.1^k up to
 * 1e20, 0, +-DBL_MAX: 1551 limits, data-independent, so epochs compare
 * bucket by bucket), with runs of empty buckets merged exactly as TF's
 * Histogram::EncodeToProto does. NaN and +-Inf values are left out (num
 * counts the finite ones); n == 0 writes TF's empty histogram. */
lp_status lp_tb_histogram(lp_tb_writer *w, const char *tag, int64_t step, const float *values, size_t n);

/* An already encoded PNG in the images plugin format of tf.summary.image:
 * tensor DT_STRING of shape [3] = {"<width>", "<height>", png}, metadata
 * plugin_name "images", data_class BLOB_SEQUENCE. channels (1, 3 or 4) is
 * only checked; the PNG carries its own colour type. */
lp_status lp_tb_image_png(lp_tb_writer *w, const char *tag, int64_t step, const uint8_t *png, size_t png_size,
                          int height, int width, int channels);
/* Encodes interleaved 8-bit RGB (height x width x 3) as PNG and writes it as above. */
lp_status lp_tb_image_rgb(lp_tb_writer *w, const char *tag, int64_t step, const uint8_t *rgb, int height, int width);

/* A binary precision-recall curve in the pr_curves plugin format of
 * tensorboard.summary.pr_curve: tensor DT_FLOAT [6, num_thresholds] with rows
 * TP, FP, TN, FN, precision, recall at thresholds i/(num_thresholds-1); a
 * prediction p falls in bucket floor(p * (num_thresholds-1)) and counts as
 * positive for every threshold up to its bucket. probs: P(positive) in
 * [0,1] (clamped); labels: 0 or nonzero. num_thresholds in 2..10000, 0 means
 * TensorBoard's default 200. */
lp_status lp_tb_pr_curve(lp_tb_writer *w, const char *tag, int64_t step, const float *probs, const uint8_t *labels,
                         size_t n, int num_thresholds);

/* fsync: records already written survive a power cut. */
lp_status lp_tb_flush(lp_tb_writer *w);
/* Flushes and frees (NULL is a no-op). */
void lp_tb_close(lp_tb_writer *w);

/* Composes count thumbnails (each h x w interleaved RGB uint8) into one RGB
 * grid, ceil(sqrt(count)) columns, each cell the thumbnail with its label
 * below in a built-in 5x7 font (digits, letters shown upper-case, and
 * . , : ; - + _ / % = ( ) [ ] # ! ? < > ' * and space; other characters as
 * '?'). A cell is as wide as the thumbnail or, when wider, its label (at most
 * 24 characters; longer labels are cut). labels may be NULL; a NULL label
 * leaves the strip empty. *rgb_out is malloc'ed (grid_h x grid_w x 3). */
lp_status lp_image_grid(const uint8_t *const *images, int count, int h, int w, const char *const *labels,
                        uint8_t **rgb_out, int *grid_h, int *grid_w);
#endif
