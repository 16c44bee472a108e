/* data: folder scan, format sniffing, decoding (libjpeg-turbo, libpng, BMP,
 * PPM/PGM, TIFF and WebP when built with them), resize, preprocessing,
 * augmentation, shuffling, batching and prefetch threads. Knows only core.
 *
 * Layout of a dataset:  DATA/{train,valid|validation,test}/<class>/.../<image>
 * Files are recognised by their magic bytes, never by extension.
 *
 * Typical use by the fit loop:
 *
 *     lp_scan_options so = lp_scan_default_options();
 *     lp_dataset *ds;  if (lp_dataset_scan("DATA", &so, &ds)) ... lp_errmsg()
 *     const lp_split *tr = lp_dataset_split(ds, "train");
 *     lp_loader_config lc = lp_loader_default_config();
 *     lc.batch = 32; lc.height = lc.width = 224; lc.seed = 42;
 *     lp_loader *ld;  lp_loader_create(tr, &lc, &ld);
 *     for (int b = 0; b < lp_loader_batches_per_pass(ld); b++) {
 *         lp_batch bt; if (lp_loader_next(ld, &bt)) ...;   // bt.x: (bt.n, 3, 224, 224)
 *     }
 *     lp_loader_free(ld); lp_dataset_free(ds);
 *
 * Semantics (documented choices):
 *  - Pixels match Keras' load_img (Pillow 9) exactly: same libjpeg settings,
 *    Pillow's RGB->L and CMYK->RGB formulas, Pillow's NEAREST/BILINEAR resize
 *    (bit-exact), keep_aspect = Keras keep_aspect_ratio centre crop.
 *  - Alpha is dropped (like Pillow's convert("RGB")), palette/transparency too.
 *  - 16-bit PNG: high byte (Pillow clips 16-bit gray to 255 instead).
 *  - EXIF orientation (JPEG, PNG eXIf) is applied; Keras ignores it.
 *  - Ignored with a count: names starting with '.', Thumbs.db, desktop.ini,
 *    __MACOSX, files whose content is no image and whose extension is not an
 *    image extension, symlinks unless follow_symlinks, non-regular files.
 *    Bad: unreadable, empty or unrecognised files with an image extension,
 *    recognised but unsupported formats (GIF, HEIF), undecodable or too large.
 *  - validation_split: per class round(f * n) images, at least 1 and at most n-1
 *    when n >= 2, chosen by lp_rng_permutation(seed ^ const, class).
 *  - Augmentation: Keras apply_transform (rotation, shift, zoom about the centre,
 *    bilinear, edges extended, then flips); shifts < 1 are fractions of the
 *    size, >= 1 pixels; brightness multiplies and clips to 0..255 (Keras goes
 *    through PIL ImageEnhance, which also rounds to integers). Draws come from
 *    lp_rng_uniform(seed ^ const, (pass << 32) ^ sample_index, k).
 */
#ifndef LP_DATA_H
#define LP_DATA_H

#include "core/core.h"
#include <stdbool.h>
#include <stdint.h>

/* ---- preprocessing modes ------------------------------------------------
 * rescale: x/255.   caffe: RGB->BGR, minus [103.939,116.779,123.68] (0..255).
 * torch: x/255, minus [0.485,0.456,0.406], divided by [0.229,0.224,0.225].
 * none: 0..255 floats, RGB.  tf: x/127.5 - 1 (Keras' MobileNetV2 and its other tf-mode
 * applications; added last so that the others keep their values).  Grayscale (channels
 * 1): caffe subtracts the mean of the three means, torch uses the mean of means/stds. */
typedef enum { LP_PRE_RESCALE, LP_PRE_CAFFE, LP_PRE_TORCH, LP_PRE_NONE, LP_PRE_TF } lp_preprocess;
typedef enum { LP_INTERP_NEAREST, LP_INTERP_BILINEAR } lp_interp;                      /* "nearest","bilinear" */
lp_status lp_preprocess_parse(const char *s, lp_preprocess *out);
const char *lp_preprocess_name(lp_preprocess p);
lp_status lp_interp_parse(const char *s, lp_interp *out);
const char *lp_interp_name(lp_interp i);

/* ---- scanning ------------------------------------------------------------ */
typedef struct lp_scan_options {
    const char *classes;     /* NULL or "negative,positive": fixes class order like Keras classes= */
    bool follow_symlinks;
    bool skip_bad;           /* false: any bad file is an error listing all bad files (path: reason) */
    bool check_decode;       /* decode-check every file during scan (default true) */
    double validation_split; /* 0 = off; else take this fraction of train/ as valid when valid/ is absent, stratified, from seed */
    uint64_t seed;
    int64_t max_pixels;      /* decompression bomb guard, default 89478485 */
    int workers;             /* threads for the decode check (0 = auto) */
    bool skip_test;          /* leave DATA/test/ alone (train never reads it: its problems are not train's) */
} lp_scan_options;
lp_scan_options lp_scan_default_options(void);

typedef struct lp_sample {
    char *path;    /* DATA-joined path (absolute when DATA was) */
    char *relpath; /* relative to DATA, e.g. "train/negative/x.jpg" (lp_split_scan_dir: relative to its dir) */
    int label;
} lp_sample;

typedef struct lp_bad_file {
    char *relpath; /* relative to DATA (or to the scanned dir) */
    char *reason;  /* "truncated JPEG", "not an image", ... */
} lp_bad_file;

typedef struct lp_split {
    char name[16];
    int num_samples;
    lp_sample *samples; /* sorted: class by class, then by path */
    int num_classes;
    char **class_names;
    int *class_counts;  /* num_classes */
    int num_bad;
    lp_bad_file *bad;   /* files refused (only non-empty when skip_bad) */
    int num_ignored;    /* hidden files, Thumbs.db, non-images */
} lp_split;

typedef struct lp_dataset lp_dataset;
/* Scans DATA/{train,valid|validation,test}. Needs train/. With skip_bad false any
 * bad file is LP_ERR_DATA with the full "path: reason" list in the message. */
lp_status lp_dataset_scan(const char *data_dir, const lp_scan_options *opt, lp_dataset **out);
const lp_split *lp_dataset_split(const lp_dataset *d, const char *name); /* "train","valid","test"; NULL if absent */
/* Keeps a random `keep` of split name's samples, drawn with seed, in their order (sorted by
 * class, then path); nothing when keep is not below its count. For --validation-steps: a
 * sample of every class's images, not the first batches of a sorted list. */
lp_status lp_dataset_keep_sample(lp_dataset *d, const char *name, int keep, uint64_t seed);
/* Scan a single class-folder dir (for `loupe evaluate CKPT DATA/test`); pass the
 * checkpoint's classes in opt->classes so labels match training. Name: the
 * folder's last component. Bad files as strict as lp_dataset_scan; with opt->classes,
 * a class without a folder (or without images) is a note (lp_split_scan_dir_notes), not
 * an error. */
lp_status lp_split_scan_dir(const char *dir, const lp_scan_options *opt, lp_split **out);
/* Groups of files with the same bytes, those of them that span splits (train and valid: a
 * leak) and those whose files carry different classes. */
void lp_dataset_duplicates(const lp_dataset *d, int *groups, int *across, int *conflicts);
/* The same, and *notes (*nnotes strings, the caller frees each and the array): what was left
 * out without being an error, e.g. folders not among opt->classes. */
lp_status lp_split_scan_dir_notes(const char *dir, const lp_scan_options *opt, lp_split **out, char ***notes, int *nnotes);
void lp_split_free(lp_split *s);
lp_status lp_dataset_report_json(const lp_dataset *d, char **json); /* malloc'ed; the `loupe data --json` shape */
lp_status lp_dataset_report_text(const lp_dataset *d, char **text); /* malloc'ed; what `loupe data` prints */
void lp_dataset_free(lp_dataset *d);

/* ---- loading --------------------------------------------------------------- */
/* ImageDataGenerator semantics; all zero = off. brightness_lo/hi: factor range
 * (both 0 = off), e.g. 0.8, 1.2. */
typedef struct lp_augment {
    bool horizontal_flip, vertical_flip;
    float rotation_range, width_shift_range, height_shift_range, zoom_range, brightness_lo, brightness_hi;
} lp_augment;

typedef struct lp_loader_config {
    int batch;
    bool shuffle;
    uint64_t seed;
    int height, width, channels; /* channels 3 (rgb) or 1 (grayscale) */
    lp_preprocess preprocess;
    lp_interp interp;
    bool keep_aspect;            /* centre crop to the target aspect before resizing */
    lp_augment augment;
    int workers;                 /* decode threads (0 = auto, never oversubscribe: compute uses OpenMP) */
    bool cache;                  /* keep decoded+resized images in memory when they fit */
    int64_t max_pixels;          /* decompression bomb guard (default 89478485) */
    int64_t cache_max_bytes;     /* cache budget (default 2 GiB) */
    bool dct_scaling;            /* JPEG: decode large images at 1/2, 1/4 or 1/8 scale (still >= target size).
                                    Faster; pixels then differ slightly from Keras' load_img. Default off. */
    int shard, shards;           /* shards > 1: each batch is the slice [n*shard/shards, n*(shard+1)/shards) of
                                    the batch an unsharded loader gives (data-parallel ranks); it may be empty */
} lp_loader_config;
lp_loader_config lp_loader_default_config(void); /* batch 32, shuffle, 224x224x3, rescale, nearest */

typedef struct lp_batch {
    int n;
    float *x;     /* (n, C, H, W) NCHW preprocessed */
    int *labels;  /* n */
    int *indices; /* n: sample index into split->samples */
    int global_n, offset; /* sharded loaders: the whole batch's size, and where this slice starts in it */
} lp_batch;

typedef struct lp_loader lp_loader;
/* The split must outlive the loader. */
lp_status lp_loader_create(const lp_split *split, const lp_loader_config *cfg, lp_loader **out);
int lp_loader_batches_per_pass(const lp_loader *l); /* ceil(n / batch); the last batch of a pass may be partial (Keras) */
/* The loader is an endless stream of passes over the split. Pass p uses
 * permutation lp_rng_permutation(seed, p, ...) when shuffle, else sorted order.
 * seek sets the position (for resume and for validation, which seeks to (0,0) each epoch). */
lp_status lp_loader_seek(lp_loader *l, int64_t pass, int batch_in_pass);
void lp_loader_position(const lp_loader *l, int64_t *pass, int *batch_in_pass);
/* out's buffers belong to the loader, valid until the next call; prefetches the
 * following batch in worker threads (double buffering). A file that cannot be
 * decoded is an error naming it (a batch never holds garbage). */
lp_status lp_loader_next(lp_loader *l, lp_batch *out);
void lp_loader_free(lp_loader *l);
/* Files decoded so far (the cache makes this stop growing after the first pass). */
int64_t lp_loader_decode_count(const lp_loader *l);

/* Single image for predict: decode + resize + preprocess into x (C*H*W). */
lp_status lp_image_load(const char *path, const lp_loader_config *cfg, float *x);

/* ---- lower level (decode, resize) ------------------------------------------- */
typedef enum { LP_FMT_UNKNOWN = 0, LP_FMT_JPEG, LP_FMT_PNG, LP_FMT_BMP, LP_FMT_PNM, LP_FMT_TIFF, LP_FMT_WEBP, LP_FMT_GIF, LP_FMT_HEIF } lp_image_format;
#define LP_DEFAULT_MAX_PIXELS 89478485 /* Pillow's MAX_IMAGE_PIXELS */
/* From magic bytes; LP_FMT_UNKNOWN when not recognised. */
lp_image_format lp_image_sniff(const uint8_t *buf, size_t n);
const char *lp_image_format_name(lp_image_format f);

/* Decoded 8-bit image, interleaved, channels 1 (gray) or 3 (RGB). */
typedef struct lp_image {
    int width, height, channels;
    uint8_t *data;
} lp_image;
typedef struct lp_image_info {
    lp_image_format format;
    int width, height;     /* as stored (before EXIF orientation) */
    char mode[8];          /* "1", "L", "LA", "RGB", "RGBA", "P", "CMYK", "I;16", ... (PIL-like) */
    int orientation;       /* EXIF orientation found (1 = none) */
} lp_image_info;
typedef struct lp_decode_options {
    int channels;          /* 1 or 3 */
    int64_t max_pixels;
    int min_width, min_height; /* when > 0, JPEG DCT scaling may shrink down to no less than this */
    bool apply_exif;       /* apply EXIF orientation (JPEG), default true */
} lp_decode_options;
lp_decode_options lp_decode_default_options(void);
/* Decodes from memory. On failure returns LP_ERR_FORMAT (or NOMEM) with a short
 * reason as the message ("truncated JPEG", "not an image", ...). info may be NULL. */
lp_status lp_image_decode(const uint8_t *buf, size_t n, const lp_decode_options *opt, lp_image *img, lp_image_info *info);
void lp_image_free(lp_image *img);
/* Resize interleaved u8 (channels c) to dst (dw x dh x c u8, interleaved), bit-exact
 * with Pillow 9. nearest: PIL NEAREST; bilinear: PIL BILINEAR (support-scaled
 * triangle filter, antialiased on downscale). Crop box (sx,sy,sw,sh) in source
 * pixels (floats), like PIL's resize(box=). */
lp_status lp_image_resize(const lp_image *src, float box_x, float box_y, float box_w, float box_h,
                          int dw, int dh, lp_interp interp, uint8_t *dst);

#endif
