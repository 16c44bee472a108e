/* loupe train DATA --run RUN [options] */
#include "cli.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *usage_text =
    "usage: loupe train DATA --run RUN [options]\n"
    "\n"
    "Trains a classifier on DATA/train/<class>/* and validates on DATA/valid (or validation)/<class>/*.\n"
    "\n"
    "model:\n"
    "  --model vgg16|vgg19|tiny   backbone (default vgg16)\n"
    "  --top keep|none            keep the 4096-wide top with a new output layer (default keep),\n"
    "                             or the convolutional base only with --head\n"
    "  --head SPEC                head for --top none (default flatten,dense), e.g.\n"
    "                             flatten,dense:256:relu,dropout:0.5,dense  or  gap,dense\n"
    "  --weights FILE             pretrained weights: Keras .h5, torchvision/timm .safetensors,\n"
    "                             ONNX or a loupe checkpoint\n"
    "  --freeze base|none|PREFIX  freeze the backbone, nothing (default), or tensors by name prefix\n"
    "input:\n"
    "  --size WxH                 input size (default 224x224)\n"
    "  --preprocess auto|rescale|caffe|torch|none\n"
    "                             auto (default): what the weights expect, else rescale (x/255)\n"
    "  --interpolation nearest|bilinear   resize filter (default nearest, like Keras)\n"
    "  --classes a,b,...          class order (default: sorted folder names)\n"
    "  --color-mode rgb|grayscale (default rgb)\n"
    "  --validation-split F       hold out F of train/ as validation when there is no valid/\n"
    "  --skip-bad                 skip unreadable images (listed in RUN/skipped.txt) instead of stopping\n"
    "augmentation (train only, ImageDataGenerator names):\n"
    "  --horizontal-flip --vertical-flip --rotation-range DEG --width-shift-range F\n"
    "  --height-shift-range F --zoom-range F --brightness-range LO:HI\n"
    "training:\n"
    "  --epochs N (default 10)    --batch N (default 32)\n"
    "  --steps-per-epoch N        batches per epoch (default: one pass over train)\n"
    "  --validation-steps N       validation batches (default: the whole valid split)\n"
    "  --optimizer sgd|adam|adamw (default sgd)   --lr X (default 0.01 sgd, 0.001 adam/adamw)\n"
    "  --momentum X (default 0)   --nesterov      --weight-decay X (default 0; adamw 0.01)\n"
    "  --schedule constant|step:E:G|cosine        learning-rate schedule (default constant)\n"
    "  --reduce-lr FACTOR:PATIENCE                ReduceLROnPlateau on the monitored figure\n"
    "  --monitor val_loss|val_accuracy            figure for best checkpoint, early stop (default val_loss)\n"
    "  --early-stop PATIENCE [--restore-best]     EarlyStopping; restore writes checkpoints/final.safetensors\n"
    "  --seed N (default 1)       --no-shuffle    --threads N (default: all cores)\n"
    "  --precision fp32|bf16|auto (default fp32): bf16 = convolutions and pooling in bf16 (AMX),\n"
    "                             fp32 master weights; auto = bf16 where the CPU has AMX\n"
    "  --conv auto|direct|winograd (default auto): fp32 3x3 convolutions; auto = oneDNN's Winograd\n"
    "                             F(4x4,3x3) where it is faster (maps >= 8x8, batch x map >= 1024)\n"
    "  --no-feature-cache         recompute frozen-base features every epoch (default: computed once\n"
    "                             per image when the base is frozen and augmentation is off)\n"
    "  --resume                   continue RUN from checkpoints/last.safetensors\n"
    "  --diagnose                 after training, the short diagnosis (loupe diagnose RUN for the\n"
    "                             tables) and RUN/report.html\n"
    "  --on-nan stop|skip         NaN/Inf training loss: stop, last good checkpoint kept (default);\n"
    "                             or skip each batch whose loss or gradients are NaN/Inf (no update, not\n"
    "                             in the epoch's figures; a warning per epoch; run.json skipped_nan_batches).\n"
    "                             All batches of an epoch skipped, or a NaN validation loss: stops\n"
    "logs:\n"
    "  --tensorboard on|off (default on)  --histogram-freq N (default 0)  --batch-log-freq N (default 0)\n"
    "  --quiet                    no progress output\n"
    "\n"
    "RUN receives run.json, history.csv, valid_predictions.csv, checkpoints/{last,best}.safetensors\n"
    "and TensorBoard logs in logs/{train,validation}. Ctrl-C finishes the step, saves last and exits 130.\n";

static volatile sig_atomic_t g_interrupts = 0;
static void on_sigint(int sig) {
    (void)sig;
    if (++g_interrupts >= 2) _exit(130);
    lp_train_request_stop();
}

static int bad(const char *msg, const char *arg) {
    char buf[512];
    snprintf(buf, sizeof buf, msg, arg);
    cli_error("train", buf, "run 'loupe train --help' for the options");
    return 2;
}

static bool parse_size(const char *s, int *w, int *h) {
    char *end;
    long a = strtol(s, &end, 10);
    if (*end != 'x' || a < 1 || a > 100000) return false;
    long b = strtol(end + 1, &end, 10);
    if (*end || b < 1 || b > 100000) return false;
    *w = (int)a;
    *h = (int)b;
    return true;
}

/* --diagnose: the run is finished and saved; a diagnosis that cannot be made
 * (e.g. no validation images) is reported without failing the training. */
static int diagnose_after_training(const char *run) {
    lp_diagnosis *d;
    lp_status s = lp_diagnose_run(run, NULL, &d);
    if (s) {
        fprintf(stderr, "loupe train: training finished, but no diagnosis: %s\n", lp_errmsg());
        return 0;
    }
    char *text = lp_diagnosis_text(d, LP_DIAGNOSIS_SHORT);
    printf("\n%s", text ? text : "");
    free(text);
    if (lp_diagnosis_write_html(d, NULL) == LP_OK)
        printf("Tables: loupe diagnose %s ; report: %s/report.html\n", run, run);
    else
        fprintf(stderr, "loupe train: could not write %s/report.html: %s\n", run, lp_errmsg());
    lp_diagnosis_free(d);
    return 0;
}

int cmd_train(int argc, char **argv) {
    lp_train_params p = lp_train_default_params();
    int diagnose = 0;
    long v;
    double d;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED()                                                   \
    do {                                                         \
        if (!val) return bad("option %s needs a value", a);      \
        i++;                                                     \
    } while (0)
#define INT_OPT(name, lo, hi, field)                                                   \
    if (!strcmp(a, name)) {                                                           \
        NEED();                                                                       \
        if (!cli_parse_int(val, lo, hi, &v)) return bad(name " expects an integer in range, got '%s'", val); \
        field = (int)v;                                                               \
        continue;                                                                     \
    }
#define NUM_OPT(name, field)                                                         \
    if (!strcmp(a, name)) {                                                         \
        NEED();                                                                     \
        if (!cli_parse_double(val, &d)) return bad(name " expects a number, got '%s'", val); \
        field = d;                                                                  \
        continue;                                                                   \
    }
#define STR_OPT(name, field) \
    if (!strcmp(a, name)) {  \
        NEED();              \
        field = val;         \
        continue;            \
    }
#define FLAG(name, field)   \
    if (!strcmp(a, name)) { \
        field = 1;          \
        continue;           \
    }
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        STR_OPT("--run", p.run_dir)
        STR_OPT("--model", p.model)
        STR_OPT("--top", p.top)
        STR_OPT("--head", p.head)
        STR_OPT("--weights", p.weights)
        STR_OPT("--preprocess", p.preprocess)
        STR_OPT("--interpolation", p.interpolation)
        STR_OPT("--classes", p.classes)
        STR_OPT("--color-mode", p.color_mode)
        STR_OPT("--optimizer", p.optimizer)
        STR_OPT("--freeze", p.freeze)
        STR_OPT("--monitor", p.monitor)
        STR_OPT("--schedule", p.schedule)
        STR_OPT("--precision", p.precision)
        STR_OPT("--conv", p.conv_algo)
        STR_OPT("--on-nan", p.on_nan)
        FLAG("--diagnose", diagnose)
        INT_OPT("--epochs", 1, 1000000, p.epochs)
        INT_OPT("--batch", 1, 65536, p.batch)
        INT_OPT("--steps-per-epoch", 1, 100000000, p.steps_per_epoch)
        INT_OPT("--validation-steps", 1, 100000000, p.validation_steps)
        INT_OPT("--threads", 0, 1024, p.threads)
        INT_OPT("--early-stop", 1, 1000000, p.early_stop)
        INT_OPT("--histogram-freq", 0, 1000000, p.histogram_freq)
        INT_OPT("--batch-log-freq", 0, 100000000, p.batch_log_freq)
        NUM_OPT("--lr", p.lr)
        NUM_OPT("--momentum", p.momentum)
        NUM_OPT("--weight-decay", p.weight_decay)
        NUM_OPT("--rotation-range", p.rotation_range)
        NUM_OPT("--width-shift-range", p.width_shift)
        NUM_OPT("--height-shift-range", p.height_shift)
        NUM_OPT("--zoom-range", p.zoom_range)
        NUM_OPT("--validation-split", p.validation_split)
        FLAG("--nesterov", p.nesterov)
        FLAG("--restore-best", p.restore_best)
        FLAG("--resume", p.resume)
        FLAG("--skip-bad", p.skip_bad)
        FLAG("--horizontal-flip", p.hflip)
        FLAG("--vertical-flip", p.vflip)
        if (!strcmp(a, "--no-shuffle")) {
            p.shuffle = 0;
            continue;
        }
        if (!strcmp(a, "--quiet")) {
            p.verbose = 0;
            continue;
        }
        if (!strcmp(a, "--no-feature-cache")) {
            p.cache_features = 0;
            continue;
        }
        if (!strcmp(a, "--seed")) {
            NEED();
            if (!cli_parse_int(val, 0, 2147483647L, &v)) return bad("--seed expects a non-negative integer, got '%s'", val);
            p.seed = (uint64_t)v;
            continue;
        }
        if (!strcmp(a, "--size")) {
            NEED();
            if (!parse_size(val, &p.width, &p.height)) return bad("--size expects WxH like 224x224, got '%s'", val);
            continue;
        }
        if (!strcmp(a, "--tensorboard")) {
            NEED();
            if (!strcmp(val, "on")) p.tensorboard = 1;
            else if (!strcmp(val, "off")) p.tensorboard = 0;
            else return bad("--tensorboard expects on or off, got '%s'", val);
            continue;
        }
        if (!strcmp(a, "--reduce-lr")) {
            NEED();
            char *end;
            double fct = strtod(val, &end);
            long pat = *end == ':' ? strtol(end + 1, &end, 10) : -1;
            if (*end || !(fct > 0 && fct < 1) || pat < 1) return bad("--reduce-lr expects FACTOR:PATIENCE like 0.5:3, got '%s'", val);
            p.reduce_lr_factor = fct;
            p.reduce_lr_patience = (int)pat;
            continue;
        }
        if (!strcmp(a, "--brightness-range")) {
            NEED();
            char *end;
            double lo = strtod(val, &end);
            double hi = *end == ':' ? strtod(end + 1, &end) : -1;
            if (*end || !(lo > 0) || !(hi >= lo)) return bad("--brightness-range expects LO:HI like 0.8:1.2, got '%s'", val);
            p.brightness_lo = lo;
            p.brightness_hi = hi;
            continue;
        }
        if (a[0] == '-' && a[1]) return bad("unknown option '%s'", a);
        if (p.data_dir) return bad("unexpected argument '%s' (one DATA folder only)", a);
        p.data_dir = a;
#undef NEED
#undef INT_OPT
#undef NUM_OPT
#undef STR_OPT
#undef FLAG
    }
    if (!p.data_dir) return bad("%s", "missing DATA folder (DATA/train/<class>/*)");
    if (!p.run_dir) return bad("%s", "missing --run RUN (the folder that receives checkpoints and logs)");
    if (access(p.data_dir, R_OK) != 0) return bad("data folder '%s' does not exist or is not readable", p.data_dir);
    p.out = stdout;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    lp_status s = lp_train(&p, NULL, NULL);
    if (s) return cli_fail("train", s);
    return diagnose ? diagnose_after_training(p.run_dir) : 0;
}
