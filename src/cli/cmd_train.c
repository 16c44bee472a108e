/* loupe train DATA --run RUN [options] */
#include "cli.h"
#include "train/dist.h"
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
    "  --model vgg16|vgg19|resnet18|resnet34|resnet50|mobilenet_v2|efficientnet_b0|tiny   backbone (default\n"
    "                             vgg16); ResNets, MobileNetV2, EfficientNet-B0: torchvision's, top keep =\n"
    "                             global average pool + a new fc (classifier.1 after dropout 0.2)\n"
    "  --top keep|none            keep the 4096-wide top with a new output layer (default keep),\n"
    "                             or the convolutional base only with --head\n"
    "  --head SPEC                head for --top none (implies it; default flatten,dense), e.g.\n"
    "                             flatten,dense:256:relu,dropout:0.5,dense  or  gap,dense\n"
    "  --weights FILE             pretrained weights: Keras .h5, torchvision/timm .safetensors,\n"
    "                             ONNX or a loupe checkpoint\n"
    "  --freeze base|none|PREFIX  freeze the backbone, nothing (default), or tensors by name prefix\n"
    "input:\n"
    "  --size WxH                 input size (default 224x224)\n"
    "  --preprocess auto|rescale|caffe|torch|tf|none\n"
    "                             auto (default): what the weights expect, else rescale (x/255)\n"
    "  --interpolation nearest|bilinear   resize filter (default nearest, like Keras)\n"
    "  --classes a,b,...          class order (default: sorted folder names)\n"
    "  --color-mode rgb|grayscale (default rgb)\n"
    "  --validation-split F       hold out F of train/ as validation when there is no valid/: per\n"
    "                             class, round(F x n) images drawn with --seed (Keras takes the first)\n"
    "  --skip-bad                 skip unreadable images (listed in RUN/skipped.txt) instead of stopping\n"
    "augmentation (train only, ImageDataGenerator names):\n"
    "  --horizontal-flip --vertical-flip --rotation-range DEG --width-shift-range F\n"
    "  --height-shift-range F --zoom-range F --brightness-range LO:HI (as Keras: a shift F < 1 is\n"
    "  a fraction of the side, F >= 1 pixels; zoom in [1-F, 1+F])\n"
    "training:\n"
    "  --epochs N (default 10)    --batch N (default 32)\n"
    "  --steps-per-epoch N        batches per epoch (default: one pass over train)\n"
    "  --validation-steps N       validation batches, of a random sample of valid/ drawn with --seed\n"
    "                             (the same every epoch; default: the whole valid split)\n"
    "  --optimizer sgd|adam|adamw (default sgd)   --lr X (default 0.01 sgd, 0.001 adam/adamw)\n"
    "  --momentum X (sgd; default 0)  --nesterov  --weight-decay X (default 0; adamw 0.01)\n"
    "  --schedule constant|step:E:G|cosine        learning-rate schedule (default constant)\n"
    "  --reduce-lr FACTOR:PATIENCE                ReduceLROnPlateau on the monitored figure (not with --schedule)\n"
    "  --monitor val_loss|val_accuracy            figure for best checkpoint, early stop (default val_loss)\n"
    "  --early-stop PATIENCE [--restore-best]     EarlyStopping; restore writes checkpoints/final.safetensors\n"
    "  --seed N (default 1)       --no-shuffle    --threads N (default: all cores)\n"
    "  --precision fp32|bf16|auto (default fp32): bf16 = convolutions and pooling in bf16\n"
    "                             (AVX512-BF16 or AMX; without them fp32, said), fp32 master weights;\n"
    "                             auto = bf16 where the CPU has it and it is faster (not batch-norm\n"
    "                             models on AMX)\n"
    "  --conv auto|direct|winograd (default auto): fp32 3x3 convolutions; auto = Winograd where\n"
    "                             it is faster: oneDNN's F(4x4,3x3) on AVX-512 (maps >= 8x8, batch\n"
    "                             x map >= 1024, <= 256 MB of transformed input and output per\n"
    "                             layer), loupe's F(2x2,3x3) on AVX2 (batch x 2x2 tiles >= 16)\n"
    "  --bn auto|train|frozen     batch norm (ResNets) in training steps: train = the batch's\n"
    "                             statistics (PyTorch's model.train()), frozen = the running ones\n"
    "                             (Keras' frozen base); auto (default): frozen for frozen layers\n"
    "  --no-feature-cache         recompute frozen-base features every epoch (default: computed once\n"
    "                             per image when the base is frozen and augmentation is off)\n"
    "  --resume                   continue RUN from checkpoints/last.safetensors, with the options it\n"
    "                             started with (others are refused, each named; --lr, --schedule and\n"
    "                             --reduce-lr may change, with a note)\n"
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
    "and TensorBoard logs in logs/{train,validation}. Ctrl-C finishes the step, saves last and exits 130\n"
    "(SIGTERM likewise, exit 143); a second one stops at once without saving.\n";

/* Ctrl-C (SIGINT) or SIGTERM (kill, timeout, job schedulers): the first finishes the step,
 * saves and exits 130 (143 for SIGTERM); a second one exits at once, and says that the save in
 * progress was dropped (checkpoints are replaced whole: the previous one stays). */
static volatile sig_atomic_t g_interrupts = 0, g_signal = 0;
static void on_stop_signal(int sig) {
    if (++g_interrupts >= 2) {
        static const char msg[] = "\nloupe train: interrupted again: stopped at once, without saving; --resume continues "
                                  "from the last checkpoint saved before\n";
        ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)w;
        _exit(128 + sig);
    }
    g_signal = sig;
    lp_train_request_stop();
}

static int bad(const char *msg, const char *arg) {
    char buf[512];
    snprintf(buf, sizeof buf, msg, arg);
    cli_error("train", buf, "run 'loupe train --help' for the options");
    return 2;
}

/* --size WxH within the CLI's size limits (lp_train_params *). Sides under 32 pass
 * here so that the library says why VGG cannot take them. */
static bool parse_size(const char *s, void *dest) {
    lp_train_params *p = dest;
    return cli_parse_size(s, 1, false, &p->width, &p->height);
}

/* --lr X, X > 0 (double *): the library reads 0 as "the optimizer's default", which a
 * user who typed 0 would not expect. */
static bool parse_positive(const char *s, void *dest) {
    double v;
    if (!cli_parse_double(s, &v) || !(v > 0)) return false;
    *(double *)dest = v;
    return true;
}

/* "A:B" into a and b (each shorter than size). */
static bool split_colon(const char *s, char *a, char *b, size_t size) {
    const char *c = strchr(s, ':');
    if (!c || (size_t)(c - s) >= size || strlen(c + 1) >= size) return false;
    snprintf(a, size, "%.*s", (int)(c - s), s);
    snprintf(b, size, "%s", c + 1);
    return true;
}

/* --tensorboard on|off (int *). */
static bool parse_on_off(const char *s, void *dest) {
    if (strcmp(s, "on") && strcmp(s, "off")) return false;
    *(int *)dest = !strcmp(s, "on");
    return true;
}

/* --reduce-lr FACTOR:PATIENCE, 0 < FACTOR < 1, PATIENCE >= 1 (lp_train_params *). */
static bool parse_reduce_lr(const char *s, void *dest) {
    lp_train_params *p = dest;
    char a[64], b[64];
    double fct;
    long pat;
    if (!split_colon(s, a, b, sizeof a) || !cli_parse_double(a, &fct) || !(fct > 0 && fct < 1) ||
        !cli_parse_int(b, 1, 1000000, &pat))
        return false;
    p->reduce_lr_factor = fct;
    p->reduce_lr_patience = (int)pat;
    return true;
}

/* --brightness-range LO:HI, 0 < LO <= HI (lp_train_params *). */
static bool parse_brightness(const char *s, void *dest) {
    lp_train_params *p = dest;
    char a[64], b[64];
    double lo, hi;
    if (!split_colon(s, a, b, sizeof a) || !cli_parse_double(a, &lo) || !cli_parse_double(b, &hi) || !(lo > 0) ||
        !(hi >= lo))
        return false;
    p->brightness_lo = lo;
    p->brightness_hi = hi;
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
    lp_diagnosis_set_thumbnailer(d, lp_image_thumbnail_png, NULL);
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
    int diagnose = 0, top_seen = 0, head_seen = 0, nargs;
    const cli_option opts[] = {
        CLI_OPT("--run", CLI_STRING, &p.run_dir),
        CLI_OPT("--model", CLI_STRING, &p.model),
        {"--top", CLI_STRING, &p.top, .seen = &top_seen},
        {"--head", CLI_STRING, &p.head, .seen = &head_seen},
        CLI_OPT("--weights", CLI_STRING, &p.weights),
        CLI_OPT("--preprocess", CLI_STRING, &p.preprocess),
        CLI_OPT("--interpolation", CLI_STRING, &p.interpolation),
        CLI_OPT("--classes", CLI_STRING, &p.classes),
        CLI_OPT("--color-mode", CLI_STRING, &p.color_mode),
        CLI_OPT("--optimizer", CLI_STRING, &p.optimizer),
        CLI_OPT("--freeze", CLI_STRING, &p.freeze),
        CLI_OPT("--monitor", CLI_STRING, &p.monitor),
        CLI_OPT("--schedule", CLI_STRING, &p.schedule),
        CLI_OPT("--precision", CLI_STRING, &p.precision),
        CLI_OPT("--conv", CLI_STRING, &p.conv_algo),
        CLI_OPT("--bn", CLI_STRING, &p.bn),
        CLI_OPT("--on-nan", CLI_STRING, &p.on_nan),
        CLI_OPT("--diagnose", CLI_FLAG, &diagnose),
        {"--epochs", CLI_INT, &p.epochs, .lo = 1, .hi = 1000000},
        {"--batch", CLI_INT, &p.batch, .lo = 1, .hi = 65536},
        {"--steps-per-epoch", CLI_INT, &p.steps_per_epoch, .lo = 1, .hi = 100000000},
        {"--validation-steps", CLI_INT, &p.validation_steps, .lo = 1, .hi = 100000000},
        CLI_OPT_THREADS(&p.threads),
        {"--early-stop", CLI_INT, &p.early_stop, .lo = 1, .hi = 1000000},
        {"--histogram-freq", CLI_INT, &p.histogram_freq, .lo = 0, .hi = 1000000},
        {"--batch-log-freq", CLI_INT, &p.batch_log_freq, .lo = 0, .hi = 100000000},
        {"--lr", CLI_CUSTOM, &p.lr, .parse = parse_positive, .expects = "a number > 0"},
        {"--momentum", CLI_CUSTOM, &p.momentum, .parse = cli_parse_fraction, .expects = "a number in [0, 1)"},
        {"--weight-decay", CLI_CUSTOM, &p.weight_decay, .parse = cli_parse_nonnegative, .expects = "a number >= 0"},
        {"--rotation-range", CLI_CUSTOM, &p.rotation_range, .parse = cli_parse_nonnegative, .expects = "a number >= 0"},
        {"--width-shift-range", CLI_CUSTOM, &p.width_shift, .parse = cli_parse_nonnegative, .expects = "a number >= 0"},
        {"--height-shift-range", CLI_CUSTOM, &p.height_shift, .parse = cli_parse_nonnegative, .expects = "a number >= 0"},
        {"--zoom-range", CLI_CUSTOM, &p.zoom_range, .parse = cli_parse_fraction, .expects = "a number in [0, 1)"},
        {"--validation-split", CLI_CUSTOM, &p.validation_split, .parse = cli_parse_fraction,
         .expects = "a fraction in [0, 1)"},
        CLI_OPT("--nesterov", CLI_FLAG, &p.nesterov),
        CLI_OPT("--restore-best", CLI_FLAG, &p.restore_best),
        CLI_OPT("--resume", CLI_FLAG, &p.resume),
        CLI_OPT("--skip-bad", CLI_FLAG, &p.skip_bad),
        CLI_OPT("--horizontal-flip", CLI_FLAG, &p.hflip),
        CLI_OPT("--vertical-flip", CLI_FLAG, &p.vflip),
        CLI_OPT("--no-shuffle", CLI_FLAG_OFF, &p.shuffle),
        CLI_OPT("--quiet", CLI_FLAG_OFF, &p.verbose),
        CLI_OPT("--no-feature-cache", CLI_FLAG_OFF, &p.cache_features),
        {"--seed", CLI_U64, &p.seed, .lo = 0, .hi = 2147483647L},
        {"--size", CLI_CUSTOM, &p, .parse = parse_size, .expects = "WxH like 224x224, " CLI_SIZE_LIMITS},
        {"--tensorboard", CLI_CUSTOM, &p.tensorboard, .parse = parse_on_off, .expects = "on or off"},
        {"--reduce-lr", CLI_CUSTOM, &p, .parse = parse_reduce_lr,
         .expects = "FACTOR:PATIENCE like 0.5:3 (0 < FACTOR < 1, PATIENCE 1 to 1000000)"},
        {"--brightness-range", CLI_CUSTOM, &p, .parse = parse_brightness, .expects = "LO:HI like 0.8:1.2 (0 < LO <= HI)"},
        {0},
    };
    const cli_parser parser = {.cmd = "train", .options = opts, .max_args = 1};
    int rc = cli_parse_options(&parser, argc, argv, &nargs);
    if (rc == CLI_HELP) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (rc) return rc;
    if (nargs > 1) return bad("unexpected argument '%s' (one DATA folder only)", argv[2]);
    if (nargs) p.data_dir = argv[1];
    if (!cli_head_top(head_seen, top_seen, &p.top)) return bad("--head %s needs --top none (a head replaces the top)", p.head);
    if (!p.data_dir) return bad("%s", "missing DATA folder (DATA/train/<class>/*)");
    if (!p.run_dir) return bad("%s", "missing --run RUN (the folder that receives checkpoints and logs)");
    if (access(p.data_dir, R_OK) != 0) return bad("data folder '%s' does not exist or is not readable", p.data_dir);
    p.out = stdout;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    lp_status s = lp_train(&p, NULL, NULL);
    if (s) {
        const int failed = cli_fail("train", s), rc = s == LP_ERR_INTERRUPTED && g_signal == SIGTERM ? 128 + SIGTERM : failed;
        /* under mpirun: the other processes may wait for this one in a collective */
        if (s != LP_ERR_INTERRUPTED) lp_dist_abort_job(rc);
        return rc;
    }
    return diagnose && lp_dist_world_rank() == 0 ? diagnose_after_training(p.run_dir) : 0;
}
