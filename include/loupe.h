/*
 * loupe.h: the one public header of loupe, a C library for training image
 * classifiers by transfer learning, with training diagnostics built in.
 *
 * Conventions (sqlite-style):
 *   - every function that can fail returns lp_status (LP_OK == 0);
 *   - on failure a readable message ("file: what is wrong; what to do") is kept
 *     for the calling thread and returned by lp_errmsg(); every function that
 *     can fail clears it first, so after a success lp_errmsg() is "" (accessors
 *     and _free functions leave it alone: the message survives the cleanup);
 *   - library code never prints and never exits;
 *   - opaque handles come in lp_<object>_create/_load ... lp_<object>_free pairs;
 *     a _free function takes NULL (and does nothing), not a handle freed before;
 *   - options come in params structs initialised by lp_<object>_default_params();
 *   - pointer arguments are required unless the comment says "may be NULL"; a NULL
 *     one is LP_ERR_ARG where the function returns a status;
 *   - strings returned by accessors (class names, metadata, report texts) belong to
 *     their object and live as long as it; lp_errmsg()'s until the thread's next call;
 *   - threads: separate models may be used from separate threads at once (predict,
 *     evaluate, train). The compute thread count (lp_set_threads, lp_train_params.threads)
 *     and lp_train_request_stop are process-wide: set the count from one thread;
 *   - messages name the command-line options (--run RUN, --resume); a C caller reads
 *     them as the lp_train_params fields of the same names (run_dir, resume).
 *
 * Example (train the seed user's model, then predict):
 *
 *     lp_train_params p = lp_train_default_params();
 *     p.data_dir = "positive-negative"; p.run_dir = "runs/seed";
 *     p.model = "vgg16"; p.top = "keep"; p.batch = 2; p.epochs = 50;
 *     if (lp_train(&p, NULL, NULL) != LP_OK) fprintf(stderr, "%s\n", lp_errmsg());
 *
 *     lp_model *m;
 *     if (lp_model_load("runs/seed/checkpoints/best.safetensors", &m) == LP_OK) {
 *         float probs[2];
 *         lp_predict_file(m, "x.png", probs);
 *         lp_model_free(m);
 *     }
 */
#ifndef LOUPE_H
#define LOUPE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LOUPE_VERSION "0.1.0"

/* Marks the functions libloupe.so exports; the library is built with hidden
 * visibility, so nothing else leaks out of it. */
#if defined(__GNUC__) || defined(__clang__)
#define LP_API __attribute__((visibility("default")))
#else
#define LP_API
#endif

/* ---- errors ------------------------------------------------------------ */

typedef enum lp_status {
    LP_OK = 0,
    LP_ERR_ARG,          /* bad argument or option value */
    LP_ERR_IO,           /* file could not be read or written */
    LP_ERR_FORMAT,       /* file content is malformed or unsupported */
    LP_ERR_NOMEM,        /* allocation failed */
    LP_ERR_BACKEND,      /* oneDNN failed */
    LP_ERR_DATA,         /* dataset problem (bad images, empty class, ...) */
    LP_ERR_SHAPE,        /* tensor shape/name mismatch */
    LP_ERR_INTERRUPTED,  /* stopped by the user (Ctrl-C) */
    LP_ERR_NUMERIC,      /* NaN/Inf in loss or weights */
    LP_ERR_LOCKED,       /* run directory used by another process */
    LP_STATUS_COUNT
} lp_status;

/** @return the calling thread's last error message ("" if none). */
LP_API const char *lp_errmsg(void);
/** @return a short name for a status code, e.g. "format error". */
LP_API const char *lp_status_name(lp_status s);
/** @return the library version string. */
LP_API const char *lp_version(void);

/** Sets the number of compute threads, for the whole process (0 = one per CPU the
 * process may use; below 0 counts as 0). Where they take every such CPU, and no OpenMP
 * binding is set (OMP_PROC_BIND, OMP_PLACES, GOMP_CPU_AFFINITY; OMP_PROC_BIND=false to opt
 * out), the OpenMP pool's threads are each pinned to one CPU; the calling thread keeps its
 * CPUs, and so do the library's data worker threads. */
LP_API void lp_set_threads(int n);
LP_API int lp_get_threads(void);
/** @return the instruction-set level loupe's kernels run at and the processor, e.g.
 *  "AVX2 (AMD EPYC 7B13)"; ONEDNN_MAX_CPU_ISA lowers the level (for oneDNN and loupe). */
LP_API const char *lp_cpu_description(void);

/* ---- model ------------------------------------------------------------- */
/*
 * A trained model: the network (backbone + head) plus what is needed to use
 * it (class names, input size, preprocessing, calibration temperature), as
 * stored in a loupe checkpoint (safetensors, torchvision tensor names).
 *
 *     lp_model *m;
 *     if (lp_model_load("best.safetensors", &m) != LP_OK) { puts(lp_errmsg()); return 1; }
 *     for (int i = 0; i < lp_model_num_classes(m); i++) puts(lp_model_class_name(m, i));
 *     char *t; lp_model_summary(m, &t); fputs(t, stdout); free(t);
 *     lp_model_free(m);
 */
typedef struct lp_model lp_model;

/** Loads a loupe checkpoint (.safetensors written by training or convert).
 *  @param path checkpoint file  @param out receives the model
 *  @return LP_OK, LP_ERR_IO, LP_ERR_FORMAT (bad file or metadata), LP_ERR_SHAPE,
 *          LP_ERR_ARG (NULL, or a folder: a run folder's message names its best checkpoint) */
LP_API lp_status lp_model_load(const char *path, lp_model **out);
/** Frees a model (NULL is fine). */
LP_API void lp_model_free(lp_model *m);
/** Keras-like table: layer, output shape, parameters, trainable/frozen totals.
 *  @param text receives a malloc'ed string (caller frees) */
LP_API lp_status lp_model_summary(lp_model *m, char **text);
/** @return the number of classes (output units). */
LP_API int lp_model_num_classes(const lp_model *m);
/** @return class i's name ("class_<i>" when the checkpoint has none), NULL if out of range. */
LP_API const char *lp_model_class_name(const lp_model *m, int i);
/** Input the model expects: channels, height, width (any pointer may be NULL). */
LP_API void lp_model_input_size(const lp_model *m, int *c, int *h, int *w);
/** @return the architecture ("vgg16", "vgg19", "resnet18", "resnet34", "resnet50",
 *  "mobilenet_v2", "efficientnet_b0", "tiny"). */
LP_API const char *lp_model_arch(const lp_model *m);
/** @return a checkpoint metadata value (e.g. "preprocess", "temperature"), NULL if absent. */
LP_API const char *lp_model_meta(const lp_model *m, const char *key);
/** A new (untrained, PyTorch-initialised) model from an architecture description. */
typedef struct lp_model_params {
    const char *arch;    /**< "vgg16" | "vgg19" | "resnet18" | "resnet34" | "resnet50" | "mobilenet_v2" |
                              "efficientnet_b0" | "tiny" (loupe's test model) */
    const char *top;     /**< "keep" (torchvision classifier, new output layer) | "none" */
    const char *head;    /**< with top=none, e.g. "flatten,dense:256:relu,dropout:0.5,dense" or "gap,dense" */
    int num_classes;     /**< output units (the final "dense" without size gets this) */
    int in_channels, in_height, in_width;
    const char *freeze;  /**< NULL/"none", "base" (all pretrained layers) or a name prefix ("features.") */
    uint64_t seed;       /**< initialisation seed */
} lp_model_params;
/** vgg16, top=keep, 2 classes, 3x224x224, nothing frozen, seed 0. */
LP_API lp_model_params lp_model_default_params(void);
/** Builds a model; class names default to class_<i>. */
LP_API lp_status lp_model_create(const lp_model_params *p, lp_model **out);
/** Saves the model as a loupe checkpoint (weights + metadata incl. class names). */
LP_API lp_status lp_model_save(lp_model *m, const char *path);

/** Rewrites a checkpoint atomically with one metadata key set to value
 *  (tensors and other keys unchanged), e.g. ("temperature", "1.37"). Keys that describe
 *  the network (arch, top, head, num_classes, input_size, in_channels, ...) are refused:
 *  the tensors would no longer fit them; "temperature" must be a number in 0.001..1000
 *  and "classes" a JSON list of as many names as outputs. */
LP_API lp_status lp_checkpoint_set_meta(const char *path, const char *key, const char *value);

/* ---- data check -------------------------------------------------------- */
/*
 * Dataset check: what `loupe data DATA` prints before training.
 * Layout: DATA/{train,valid|validation,test}/<class>/.../<image>. Files are
 * judged by content (JPEG, PNG, BMP, PPM/PGM, TIFF, WebP), never by extension;
 * hidden files, Thumbs.db and non-images are ignored with a count; every image
 * is decode-checked; bad files are listed with a reason.
 *
 *     lp_data_params p = lp_data_default_params();
 *     p.data_dir = "positive-negative";
 *     lp_data_report *r;
 *     if (lp_data_check(&p, &r) == LP_OK) {
 *         fputs(lp_data_report_text(r), stdout);
 *         int bad = lp_data_report_num_bad(r);
 *         lp_data_report_free(r);
 *     }
 */
typedef struct lp_data_params {
    const char *data_dir;
    const char *classes;     /* NULL or "negative,positive": fixes the class order (Keras classes=) */
    int follow_symlinks;     /* 0: symlinked files and folders are ignored (counted) */
    double validation_split; /* 0 = off; else this fraction of train/ per class becomes valid when there is no valid/ */
    uint64_t seed;           /* for validation_split (default 1, as lp_train_params) */
    int64_t max_pixels;      /* decompression-bomb guard (default 89478485, Pillow's) */
    int threads;             /* decode-check threads (0 = all cores) */
} lp_data_params;

/** @return defaults (no class order, no symlinks, no split, Pillow's pixel limit). */
LP_API lp_data_params lp_data_default_params(void);

typedef struct lp_data_report lp_data_report;

/** Scans and decode-checks the dataset. Bad files and dataset problems (empty
 *  class, missing class folder, fewer than 2 classes) do not fail the call: they
 *  are in the report. Fails when DATA or DATA/train is missing or on bad params.
 *  @return LP_OK and *out (free with lp_data_report_free). */
LP_API lp_status lp_data_check(const lp_data_params *p, lp_data_report **out);
/** Decodes an image file with loupe's decoders (format from its magic bytes),
 *  shrinks it (Pillow's bilinear) so its longer side is max_side and encodes it
 *  as an in-memory RGB PNG (*png malloc'ed, caller frees). ctx is unused: the
 *  signature is lp_thumbnail_fn's, for lp_diagnosis_set_thumbnailer. */
LP_API lp_status lp_image_thumbnail_png(const char *path, int max_side, void *ctx, uint8_t **png, size_t *png_len);
/** 1 when the file's first bytes are those of an image format (JPEG, PNG, BMP, PNM, TIFF,
 *  WebP; GIF and HEIF/AVIF too, which loupe names but does not decode): what `data`, `train`
 *  and `predict` go by in a folder, never the extension. 0 otherwise; -1 when it cannot be read. */
LP_API int lp_file_is_image(const char *path);
/** Human-readable report ("train: Found 308 images belonging to 2 classes." ...). */
LP_API const char *lp_data_report_text(const lp_data_report *r);
/** JSON report: {"splits": {"train": {"classes": {"negative": 154, ...}, "bad": [{"path", "reason"}],
 *  "ignored": 1, ...}, "valid": {...}}, "duplicates": [...], "problems": [...], ...}; paths relative to DATA. */
LP_API const char *lp_data_report_json(const lp_data_report *r);
/** Number of bad image files (all splits). */
LP_API int lp_data_report_num_bad(const lp_data_report *r);
/** Number of dataset problems (training would refuse the dataset even with --skip-bad). */
LP_API int lp_data_report_num_problems(const lp_data_report *r);
/** Usable images in split "train", "valid" or "test"; -1 when the split is absent. */
LP_API int lp_data_report_num_images(const lp_data_report *r, const char *split);
LP_API void lp_data_report_free(lp_data_report *r);

/* ---- weights (import, convert) ----------------------------------------- */
/*
 * Pretrained weights (VGG16/19, ResNet-18/34/50, MobileNetV2, EfficientNet-B0) from the
 * files users have:
 *   - Keras HDF5 (save_weights or model.save; ..._notop.h5 or with their top; Keras'
 *     ResNet50, MobileNetV2, EfficientNetB0)
 *   - torchvision or timm state dicts saved as safetensors (F32/F16/BF16)
 *   - ONNX models of those graphs (torch.onnx.export, model zoo vgg16-7.onnx)
 *   - loupe checkpoints
 * The format is detected from the file's content. Tensors come out with
 * torchvision's names and layouts, so the converted file loads into the
 * torchvision model (e.g. torchvision.models.vgg16) with load_state_dict.
 *
 *     lp_weights_info info;
 *     if (lp_weights_convert("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
 *                            "vgg16.safetensors", NULL, &info) != LP_OK)
 *         fprintf(stderr, "%s\n", lp_errmsg());
 *     // info.source "keras-h5", info.arch "vgg16", info.top "none", info.preprocess "caffe"
 */
typedef struct lp_weights_info {
    char source[16];     /* keras-h5 | torchvision | pytorch | safetensors | onnx | loupe */
    char arch[16];       /* vgg16 | vgg19 | resnet18 | resnet34 | resnet50 | mobilenet_v2 | efficientnet_b0 | tiny */
    char top[8];         /* keep (fc1, fc2, predictions present) | none */
    char preprocess[16]; /* what the weights expect: caffe (Keras) | torch | ... */
    int num_classes;     /* outputs of the last dense layer, 0 for a convolutional base alone */
    int num_tensors;
    int64_t num_params;
    char head[256];      /* top none with dense layers: the head spec ("gap,dense:2"), else "" */
    int in_height, in_width; /* the input size the checkpoint records, 0 when none */
} lp_weights_info;

/**
 * Reads weights in any supported format and writes a loupe checkpoint
 * (safetensors, atomic replace) with metadata format "loupe-checkpoint-1",
 * source, arch, top, preprocess, num_classes.
 * @param in        weights file (.h5, .safetensors, .onnx)
 * @param out       checkpoint to write
 * @param arch_hint an architecture (lp_model_arch's names) or NULL to infer from the file
 * @param info      optional summary of what was converted (may be NULL)
 * @return LP_OK; LP_ERR_FORMAT (another model's weights, unknown or corrupt file),
 *         LP_ERR_SHAPE, LP_ERR_NUMERIC (NaN/Inf), LP_ERR_IO.
 */
LP_API lp_status lp_weights_convert(const char *in, const char *out, const char *arch_hint, lp_weights_info *info);

/** What lp_weights_convert_ex converts; lp_weights_convert_default_params() zeroes it. */
typedef struct lp_weights_convert_params {
    const char *in, *out;     /* weights file, checkpoint to write (required) */
    const char *arch;         /* an architecture (lp_model_arch's names) or NULL: from the file */
    const char *head;         /* the head spec where the file cannot tell it (a state dict's
                                 head.N: flatten or gap?), e.g. "gap,dense:2"; NULL */
    int in_height, in_width;  /* input size; 0: from the file (the ONNX input, the size the
                                 flatten fixes), else 224 */
    const char *classes;      /* "cat,dog": names in output order; NULL: ImageNet's names
                                 for 1000 outputs, else class_<i> */
} lp_weights_convert_params;
LP_API lp_weights_convert_params lp_weights_convert_default_params(void);
/**
 * lp_weights_convert with options. The checkpoint holds what predict and
 * evaluate need (head, input size, class names): it is checked to build and
 * load before it is written. Heads: torchvision's classifier, or a flatten or
 * global average pooling followed by dense layers (+ReLU, +dropout).
 * @return as lp_weights_convert; LP_ERR_ARG for options that contradict the file.
 */
LP_API lp_status lp_weights_convert_ex(const lp_weights_convert_params *p, lp_weights_info *info);

/**
 * Explains a preprocessing mismatch. Modes: "caffe", "torch", "rescale",
 * "tf", "none".
 * @param expected what the weights expect (lp_weights_info.preprocess)
 * @param chosen   what the user asked for
 * @param buf      receives the warning ("" when the modes agree)
 * @return the length of the warning (0: nothing to warn about), as snprintf.
 * Example: expected "caffe", chosen "rescale": "... inputs are ~115x too small
 * ...; channels are in the wrong order (RGB given, BGR expected) ...".
 */
LP_API int lp_weights_preprocess_warning(const char *expected, const char *chosen, char *buf, size_t n);

/* ---- train, evaluate, predict ------------------------------------------ */
/*
 * Training writes a run directory:
 *   RUN/run.json                  configuration, classes in order, dataset counts, versions,
 *                                 with on_nan "skip": skipped_nan_batches (updated each epoch)
 *   RUN/history.csv               epoch,loss,accuracy,val_loss,val_accuracy,lr (epoch from 1)
 *   RUN/valid_predictions.csv     epoch,path,label,p0,p1,... per validation image per epoch
 *   RUN/checkpoints/last.safetensors  every epoch (with optimizer and loop state for --resume)
 *   RUN/checkpoints/best.safetensors  when the monitored figure improves
 *   RUN/checkpoints/final.safetensors with restore_best: the restored best weights
 *   RUN/logs/{train,validation}/  TensorBoard event files
 *   RUN/skipped.txt               files left out with skip_bad
 */
typedef struct lp_train_params {
    const char *data_dir, *run_dir;        /* required */
    const char *model;                     /* "vgg16" (default) or another of lp_model_arch's names */
    const char *top;                       /* "keep" (default) | "none" */
    const char *head;                      /* head spec for top=none (default "flatten,dense") */
    const char *weights;                   /* pretrained weights file or NULL */
    int height, width;                     /* input size (default 224x224) */
    const char *preprocess;                /* "auto" (default: the weights', else rescale) | rescale | caffe | torch | tf | none */
    const char *interpolation;             /* "nearest" (default, like Keras) | "bilinear" */
    const char *classes;                   /* NULL or "a,b": fixes class order */
    const char *color_mode;                /* "rgb" (default) | "grayscale" */
    int epochs, batch;                     /* defaults 10, 32 */
    int steps_per_epoch, validation_steps; /* 0 = one pass / whole split; validation_steps N: N batches
                                            * of a random sample of valid drawn with seed, the same
                                            * every epoch */
    const char *optimizer;                 /* "sgd" (default) | "adam" | "adamw" */
    double lr, momentum, weight_decay;     /* lr default 0.01 (sgd) / 0.001 (adam) when 0; momentum is
                                            * SGD's (LP_ERR_ARG with adam/adamw on a new run) */
    int nesterov;
    const char *freeze;                    /* "base" | "none" (default) | name prefix */
    uint64_t seed;                         /* default 1 */
    int shuffle;                           /* default 1 */
    int threads;                           /* 0 = all cores */
    const char *monitor;                   /* "val_loss" (default) | "val_accuracy" */
    int early_stop;                        /* patience, 0 = off */
    int restore_best;
    double reduce_lr_factor;               /* 0 = off; not with a schedule (LP_ERR_ARG) */
    int reduce_lr_patience;
    const char *schedule;                  /* "constant" (default) | "step:E:G" | "cosine" */
    int resume, skip_bad;
    const char *on_nan;                    /* "stop" (default): NaN/Inf training loss fails, last good
                                            * checkpoint kept | "skip": a batch with NaN/Inf loss or gradients
                                            * is not applied nor counted (run.json skipped_nan_batches); an
                                            * epoch with all skipped, or NaN validation loss, fails as stop */
    int tensorboard;                       /* default 1 */
    int histogram_freq;                    /* epochs between weight/grad histograms, 0 = off */
    int batch_log_freq;                    /* steps between batch_loss scalars, 0 = off */
    int hflip, vflip;                      /* augmentation (train only) */
    double rotation_range, width_shift, height_shift, zoom_range, brightness_lo, brightness_hi;
    double validation_split;               /* take valid from train when DATA has no valid/ */
    int cache_features;                    /* frozen-base feature cache: 1 auto (default), 0 off */
    const char *precision;                 /* "fp32" (default) | "bf16" | "auto" */
    const char *conv_algo;                 /* fp32 3x3 stride-1 convolutions: "auto" (default: oneDNN's
                                            * Winograd F(4x4,3x3) where it is faster, i.e. maps of 8x8 or
                                            * more and batch x map >= 1024 pixels) | "direct" | "winograd" */
    const char *bn;                        /* batch norm (ResNets) in training steps: "auto" (default: frozen
                                            * for frozen layers, as Keras, else PyTorch's train mode) |
                                            * "train" (the batch's statistics) | "frozen" (the running ones) */
    int verbose;                           /* 0 silent, 1 progress (default) */
    FILE *out;                             /* progress and messages (NULL: none) */
} lp_train_params;

LP_API lp_train_params lp_train_default_params(void);

typedef struct lp_epoch_result {
    int epoch;                             /* from 1 */
    double loss, accuracy;                 /* running means over the epoch's batches */
    double val_loss, val_accuracy;         /* the validation split (validation_steps: its sample) */
    double lr, seconds;
    int improved;                          /* monitored figure improved: best checkpoint written */
} lp_epoch_result;

/** Called after each epoch; return non-zero to stop training (lp_train then returns LP_OK,
 *  the checkpoints of the epochs done written as usual). */
typedef int (*lp_epoch_callback)(const lp_epoch_result *r, void *user);

/** Trains per params, writing the run directory. After lp_train_request_stop (e.g. from
 * the program's SIGINT handler: the library installs none, the loupe command does) it
 * finishes the step, writes last.safetensors and returns LP_ERR_INTERRUPTED. */
LP_API lp_status lp_train(const lp_train_params *p, lp_epoch_callback cb, void *user);
/** Asks every running lp_train of the process to stop after the current step
 *  (async-signal-safe: callable from a signal handler). */
LP_API void lp_train_request_stop(void);

/* Evaluation of a checkpoint on a folder of class subfolders (e.g. DATA/test). */
typedef struct lp_eval_result {
    int n, num_classes;
    double loss, accuracy, roc_auc;        /* roc_auc: binary only, else NAN */
    char **class_names;
    double *precision, *recall, *f1;       /* per class */
    int *support;                          /* per class */
    int *confusion;                        /* num_classes^2, row = true, column = predicted */
    double temperature;                    /* calibration used (1 = none) */
    int skipped_bad;                       /* bad images left out (skip_bad) */
    int num_notes;                         /* what else was left out, e.g. folders not among the model's classes */
    char **notes;
} lp_eval_result;
/** Evaluates m on dir, a folder of class folders named as the model's classes (those it
 *  lacks count no images and are named in notes; other folders are left out, also in notes).
 *  batch: images per forward pass (below 1: 32). skip_bad: 1 leaves bad image files out
 *  (named in notes), 0 fails on them (LP_ERR_DATA listing them). *out: free with
 *  lp_eval_result_free. @return LP_OK; LP_ERR_DATA (no images of the model's classes, bad
 *  files), LP_ERR_NUMERIC (the net's output NaN or Inf), LP_ERR_ARG, LP_ERR_IO. */
LP_API lp_status lp_evaluate(lp_model *m, const char *dir, int batch, int skip_bad, lp_eval_result **out);
LP_API char *lp_eval_result_text(const lp_eval_result *r);  /* malloc'ed report */
LP_API char *lp_eval_result_json(const lp_eval_result *r);  /* malloc'ed JSON object */
LP_API void lp_eval_result_free(lp_eval_result *r);

/** Class probabilities for one image file, with the model's preprocessing, input size and
 * calibration temperature, into probs: lp_model_num_classes(m) floats, sized by the caller.
 * LP_ERR_NUMERIC where the net's output is NaN or Inf (damaged weights, a run that diverged). */
LP_API lp_status lp_predict_file(lp_model *m, const char *path, float *probs);
/** The same for n >= 0 files, decoded in parallel and run through the net 16 at a time:
 * probs (n * num_classes floats); status (n entries): status[i] is file i's (LP_OK, or what lp_predict_file would
 * return for it: its probabilities are then unset; lp_predict_file on it gives the
 * message). @return LP_OK unless the net itself failed. */
LP_API lp_status lp_predict_files(lp_model *m, const char *const *paths, int n, float *probs, lp_status *status);

/* ---- TensorBoard, Fashion-MNIST folders -------------------------------- */
/* TensorBoard event files are written by lp_train (RUN/logs/train and
 * RUN/logs/validation, Keras' layout). This section also holds the
 * Fashion-MNIST folder writer behind `loupe fashion`, which turns Debian's
 * dataset-fashion-mnist IDX files into the folder trees the demo trains on:
 *
 *   binary:   OUT/{train,valid,test}/{negative,positive}/NNNNN.png
 *             (train/valid drawn from the training file, test from t10k)
 *   pretrain: OUT/{train,valid}/<class>/NNNNN.png for the classes not excluded
 *
 * NNNNN is the image's index in its IDX file; images are 28x28 grayscale PNG.
 * Selection is a seeded permutation (lp_rng_permutation, stream 100 + label
 * for the training file, 200 + label for t10k), so the same options give the
 * same files. The tree is written in OUT.tmp and renamed to OUT when complete;
 * a marker OUT/.loupe-fashion records the options, and a second call with the
 * same options does nothing (result->already_prepared = 1). */
typedef struct lp_fashion_params {
    const char *source_dir; /* the four *-ubyte.gz files; default "/usr/share/datasets/fashion-mnist" */
    const char *out_dir;    /* required */
    int pretrain;           /* 0: binary task; 1: per-class folders of the non-excluded labels */
    int negative, positive; /* binary: labels 0-9 (default 0 T-shirt/top, 6 Shirt) */
    int n_train, n_valid, n_test; /* images per class; 0 = default (binary 154/26/77, pretrain 400/50; no test) */
    unsigned exclude_mask;  /* pretrain: bit l set = label l left out (default labels 0 and 6) */
    uint64_t seed;          /* default 1 */
} lp_fashion_params;

typedef struct lp_fashion_result {
    int already_prepared; /* 1: OUT was complete with these options, nothing written */
    int images;           /* images written */
    int train, valid, test; /* images per split (all classes) */
} lp_fashion_result;

/** @return defaults for the binary task (see lp_fashion_params). */
LP_API lp_fashion_params lp_fashion_default_params(void);
/** Writes the folder tree (see above). @return LP_ERR_IO when the IDX files
 *  are missing (the message names the Debian package), LP_ERR_FORMAT for bad
 *  IDX files, LP_ERR_ARG for bad options or an OUT that exists with other
 *  content. */
LP_API lp_status lp_fashion_write_folder(const lp_fashion_params *p, lp_fashion_result *result);
/** @return the folder name of Fashion-MNIST label 0-9 ("tshirt_top", "trouser",
 *  "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
 *  "ankle_boot"), NULL otherwise. */
LP_API const char *lp_fashion_class_name(int label);

/* ---- diagnose ---------------------------------------------------------- */
/*
 * Explains a finished (or interrupted) run from its run directory alone:
 * why validation loss and accuracy disagree, calibration, verdicts, report.
 * Reads RUN/run.json (optional: says less without it), RUN/history.csv and
 * RUN/valid_predictions.csv (both required; a malformed file is an
 * LP_ERR_FORMAT whose message names the file and line; a torn last line
 * without newline, as a crash while appending leaves, is ignored with a note).
 *
 *     lp_diagnosis *d;
 *     if (lp_diagnose_run("runs/seed", NULL, &d) != LP_OK) { puts(lp_errmsg()); return 1; }
 *     char *t = lp_diagnosis_text(d, 0); fputs(t, stdout); free(t);
 *     lp_diagnosis_set_thumbnailer(d, lp_image_thumbnail_png, NULL);
 *     lp_diagnosis_write_html(d, NULL);            // runs/seed/report.html
 *     printf("T = %.3f\n", lp_diagnosis_temperature(d));
 *     lp_diagnosis_free(d);
 *
 * Definitions (all figures on validation predictions):
 *   per-image loss = -log max(p_true, 1e-30); val_loss = its mean;
 *   prediction = argmax (first on ties); confidence = max probability;
 *   ECE/MCE: 15 equal-width bins (lo, hi] (Guo et al. 2017);
 *   Brier: multi-class, mean over images of sum_k (p_k - y_k)^2, in [0, 2];
 *   temperature T: minimises the NLL of softmax(log p / T), T in [0.01, 100].
 *
 * JSON (lp_diagnosis_json), stable keys; NaN/absent figures are null:
 *   run_dir, classes[], n_valid, analysed_epoch (= last_epoch unless params.epoch),
 *   best_epoch (lowest val_loss up to last_epoch), last_epoch,
 *   best_epoch_accuracy (highest val_accuracy, first on ties),
 *   val_loss_best, val_loss_last, accuracy_best, accuracy_last, rise,
 *   rise_share_misclassified (sum over images misclassified at last_epoch of
 *     (loss_last - loss_best), divided by n_valid * rise; null when rise <= 0),
 *   n_misclassified_last, p_true_misclassified_best, p_true_misclassified_last,
 *   ece, mce, brier, nll, temperature, ece_calibrated, nll_calibrated,
 *   brier_calibrated (at last_epoch), accuracy_ci: [lo, hi] (Wilson 95%),
 *   headline: the one-sentence explanation,
 *   verdicts: [{id, severity: "problem"|"warning"|"info", message, evidence:{...}}]
 *     ids: overconfident_errors, overfitting, single_class, lr_too_high,
 *          small_validation_set, preprocessing_mismatch, best_epoch_disagreement,
 *          early_stopping (would have saved epochs), patience_too_short, underconfident,
 *   calibration: {bins, ece, mce, brier, nll, temperature, temperature_at_bound,
 *     ece_calibrated, mce_calibrated, nll_calibrated, brier_calibrated,
 *     reliability: [{lo, hi, count, confidence, accuracy}],
 *     reliability_calibrated: [...]},
 *   epochs: [{epoch, loss, accuracy, val_loss, val_accuracy, lr  (history.csv),
 *     n, n_wrong, val_loss_pred, pred_accuracy, loss_wrong, loss_correct
 *     (contributions to the mean: loss_wrong + loss_correct = val_loss_pred),
 *     share_wrong, conf_correct, conf_wrong, p_true_wrong, ece, mce, brier,
 *     flips, flips_to_wrong, flips_to_right (vs the previous predicted epoch)}],
 *   images: [{path, label, label_name, predicted, wrong, loss_best, loss_last,
 *     loss_change, p_true_best, p_true_last, confidence_last,
 *     trajectory: [p_true per predicted epoch]}]  (misclassified at last_epoch
 *     first, by loss_change, then the highest-loss correct ones),
 *   prediction_epochs: the epochs that trajectories index,
 *   confusion: k x k (row = true class, column = predicted) at last_epoch,
 *   early_stopping: {monitor, patience, stop_epoch, restored_epoch, epochs_saved,
 *     best_epoch, needed_patience, too_early}  (Keras EarlyStopping replayed),
 *   config: {model, preprocess, weights, weights_preprocess, lr, batch, epochs,
 *     monitor, early_stop}, notes: [strings].
 */
typedef struct lp_diagnosis lp_diagnosis;

typedef struct lp_diagnose_params {
    int epoch;       /* epoch to analyse as "last"; 0 (default) = the last one with predictions */
    int patience;    /* early-stopping what-if; 0 (default) = run.json's early_stop, else 5 */
    int max_images;  /* images listed in text/HTML (default 10; JSON lists all misclassified too) */
} lp_diagnose_params;

/** @return the defaults (epoch 0, patience 0, max_images 10). */
LP_API lp_diagnose_params lp_diagnose_default_params(void);
/** Reads and analyses a run directory.
 *  @param run_dir the run directory  @param p NULL for defaults  @param out receives the result
 *  @return LP_OK, LP_ERR_IO (missing file), LP_ERR_FORMAT (malformed file: file and line
 *          in lp_errmsg()), LP_ERR_ARG (bad params, e.g. an epoch with no predictions) */
LP_API lp_status lp_diagnose_run(const char *run_dir, const lp_diagnose_params *p, lp_diagnosis **out);

enum { LP_DIAGNOSIS_FULL = 0, LP_DIAGNOSIS_SHORT = 1 };
/** Plain-text explanation: a short summary first, then tables (LP_DIAGNOSIS_FULL)
 *  or the summary alone (LP_DIAGNOSIS_SHORT, for `train --diagnose`).
 *  @return malloc'ed string (caller frees), NULL on out of memory. */
LP_API char *lp_diagnosis_text(const lp_diagnosis *d, int mode);
/** @return malloc'ed JSON object (keys above; caller frees), NULL on out of memory. */
LP_API char *lp_diagnosis_json(const lp_diagnosis *d);
/** Writes a self-contained HTML report (inline SVG, no scripts, no network)
 *  atomically. @param path NULL = RUN/report.html */
LP_API lp_status lp_diagnosis_write_html(const lp_diagnosis *d, const char *path);
/** Image provider for the report's thumbnails of the most affected images (the
 *  misclassified ones whose loss rose most): gets the image's path (resolved
 *  against run.json's config.data) and returns a malloc'ed PNG whose longer side
 *  is at most max_side, or fails with the reason in lp_errmsg().
 *  lp_image_thumbnail_png (loupe's own decoders) is one; without a provider the
 *  report shows a placeholder naming each image. */
typedef lp_status (*lp_thumbnail_fn)(const char *path, int max_side, void *ctx, uint8_t **png, size_t *png_len);
LP_API void lp_diagnosis_set_thumbnailer(lp_diagnosis *d, lp_thumbnail_fn fn, void *ctx);
/** @return the fitted calibration temperature at the analysed epoch. */
LP_API double lp_diagnosis_temperature(const lp_diagnosis *d);
/** Temperature fitted on one epoch's predictions, e.g. for the checkpoint saved at that
 *  epoch; NaN if that epoch has none, or if the fit ends at its bound (T 0.01 or 100: no
 *  calibration, see the diagnosis' note). */
LP_API double lp_diagnosis_temperature_at(const lp_diagnosis *d, int epoch);
/** @return the epoch whose weights best.safetensors holds: best monitored figure
 *  (run.json's monitor, default val_loss; history.csv values, first on ties). */
LP_API int lp_diagnosis_monitor_best_epoch(const lp_diagnosis *d);
/** @return the last epoch with predictions (what last.safetensors holds if the run was not torn). */
LP_API int lp_diagnosis_last_epoch(const lp_diagnosis *d);
/** @return number of verdicts; lp_diagnosis_verdict_id(d, i) its id (NULL out of range). */
LP_API int lp_diagnosis_verdict_count(const lp_diagnosis *d);
LP_API const char *lp_diagnosis_verdict_id(const lp_diagnosis *d, int i);
/** @return the run directory the diagnosis was made from. */
LP_API const char *lp_diagnosis_run_dir(const lp_diagnosis *d);
LP_API void lp_diagnosis_free(lp_diagnosis *d);

/* ---- bench ------------------------------------------------------------- */
/** Training throughput on synthetic data (loupe bench). */
typedef struct lp_bench_params {
    lp_model_params model; /**< architecture (num_classes 2 by default) */
    int batch, steps, warmup; /**< timed steps after warmup steps */
    const char *optimizer;    /**< "sgd" (momentum 0.9), "adam", "adamw" */
    const char *precision;    /**< "fp32" (default), "bf16" (refused without native bf16), "auto" */
    const char *conv_algo;    /**< fp32 3x3 convolutions: "auto" (default: Winograd where it pays), "direct", "winograd" */
    int per_layer;            /**< 1: also the per-layer table (in-step time vs primitives alone) */
    const char *bn;           /**< batch norm (ResNets): "auto" (default), "train", "frozen", as lp_train_params */
} lp_bench_params;
typedef struct lp_bench_result {
    double images_per_s;     /**< batch * steps / total time of the timed steps */
    double step_s, forward_s, backward_s, update_s; /**< mean seconds per step */
    double first_step_s;     /**< the first warmup step (builds primitives) */
    double final_loss;
    int bf16;                /**< 1 when the run used bf16 convolutions */
    int winograd_layers, conv_layers; /**< conv layers computed with Winograd, of all conv layers */
    double peak_rss_mb;      /**< the process's peak resident memory after the run */
    char *per_layer_text;    /**< with per_layer: the table (malloc'ed; lp_bench_result_free) */
    double primitive_s;      /**< with per_layer: sum of the layers' primitives' times alone per step */
    double overhead_share;   /**< with per_layer: (step_s - primitive_s - update_alone_s) / step_s */
    double update_alone_s;   /**< with per_layer: the optimizer's update of all trainable weights alone, per step */
} lp_bench_result;
LP_API lp_bench_params lp_bench_default_params(void);
LP_API lp_status lp_bench_run(const lp_bench_params *p, lp_bench_result *r);
LP_API void lp_bench_result_free(lp_bench_result *r);

#ifdef __cplusplus
}
#endif
#endif /* LOUPE_H */
