/* loupe bench: training images/s on a synthetic batch, with the split
 * between forward (+loss), backward and the optimizer update. */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: loupe bench [--model vgg16|vgg19|resnet18|resnet34|resnet50|mobilenet_v2|efficientnet_b0|tiny] [--top keep|none]\n"
               "                   [--head SPEC] [--size WxH] [--bn auto|train|frozen]\n"
               "                   [--batch N] [--steps K] [--warmup W] [--classes N] [--freeze SPEC]\n"
               "                   [--optimizer sgd|adam|adamw] [--threads T] [--precision fp32|bf16|auto]\n"
               "                   [--conv auto|direct|winograd] [--per-layer]\n\n"
               "Trains on one synthetic batch and prints images/s over K timed steps (after W\n"
               "warmup steps that build the primitives), and the mean forward/backward/update\n"
               "time per step (as in training, conv layers on maps of <= 16 pixels apply their\n"
               "update inside backward, which then includes it). Defaults: vgg16, top keep, 224x224, batch 8, 5 steps, 1 warmup,\n"
               "SGD momentum 0.9, all cores, fp32. --precision bf16 runs convolutions and pooling in\n"
               "bf16 (AMX where present; refused on CPUs without native bf16), auto picks bf16\n"
               "where it is faster (AVX512-BF16: every model; AMX: no batch norm). --conv picks the fp32 3x3 convolutions' algorithm:\n"
               "auto (default) uses Winograd where it is faster than direct: on AVX-512 oneDNN's F(4x4,3x3)\n"
               "on maps of 8x8 or more with batch x map >= 1024 pixels and <= 256 MB of transformed input\n"
               "and output per layer, on AVX2 loupe's F(2x2,3x3) from 16 2x2 tiles a batch (batch x\n"
               "ceil(h/2) x ceil(w/2)). --per-layer adds, per layer, the time inside a training step\n"
               "next to its kernels (oneDNN primitives, our pooling) run alone, the optimizer's update run alone\n"
               "(a memory-bound kernel of ours), and the framework overhead share: step minus all kernels alone.\n");
}

/* --size WxH within the CLI's size limits (lp_model_params *). */
static bool parse_size(const char *v, void *dest) {
    lp_model_params *m = dest;
    return cli_parse_size(v, 1, false, &m->in_width, &m->in_height);
}

int cmd_bench(int argc, char **argv) {
    lp_bench_params p = lp_bench_default_params();
    int threads = 0, nargs;
    const cli_option opts[] = {
        CLI_OPT("--model", CLI_STRING, &p.model.arch),
        CLI_OPT("--top", CLI_STRING, &p.model.top),
        CLI_OPT("--head", CLI_STRING, &p.model.head),
        CLI_OPT("--freeze", CLI_STRING, &p.model.freeze),
        CLI_OPT("--optimizer", CLI_STRING, &p.optimizer),
        CLI_OPT("--per-layer", CLI_FLAG, &p.per_layer),
        CLI_OPT("--precision", CLI_STRING, &p.precision), /* names checked by lp_bench_run */
        CLI_OPT("--conv", CLI_STRING, &p.conv_algo),
        CLI_OPT("--bn", CLI_STRING, &p.bn),
        {"--size", CLI_CUSTOM, &p.model, .parse = parse_size, .expects = "WxH like 224x224, " CLI_SIZE_LIMITS},
        {"--batch", CLI_INT, &p.batch, .lo = 1, .hi = 4096},
        {"--steps", CLI_INT, &p.steps, .lo = 1, .hi = 100000},
        {"--warmup", CLI_INT, &p.warmup, .lo = 0, .hi = 1000},
        {"--classes", CLI_INT, &p.model.num_classes, .lo = 1, .hi = 100000},
        CLI_OPT_THREADS(&threads),
        {0},
    };
    const cli_parser parser = {.cmd = "bench", .options = opts, .max_args = 0};
    int rc = cli_parse_options(&parser, argc, argv, &nargs);
    if (rc == CLI_HELP) {
        usage(stdout);
        return 0;
    }
    if (rc) return rc;
    if (nargs) {
        char msg[256];
        snprintf(msg, sizeof msg, "unexpected argument '%s' (bench takes options only)", argv[1]);
        cli_error("bench", msg, "run 'loupe bench --help' for the options");
        return 2;
    }
    if (!strcmp(p.model.top, "none") && !p.model.head) p.model.head = "flatten,dense";
    lp_set_threads(threads);
    lp_bench_result r;
    lp_status st = lp_bench_run(&p, &r);
    if (st) return cli_fail("bench", st);
    printf("loupe bench: %s top=%s%s%s %dx%d batch %d, %s, %d thread(s), %d steps after %d warmup\n", p.model.arch, p.model.top,
           p.model.head && !strcmp(p.model.top, "none") ? " head=" : "", p.model.head && !strcmp(p.model.top, "none") ? p.model.head : "",
           p.model.in_width, p.model.in_height, p.batch, r.bf16 ? "bf16" : "fp32", lp_get_threads(), p.steps, p.warmup);
    printf("CPU: %s, %s\n", lp_cpu_description(), r.bf16 ? "bf16" : "fp32");
    printf("images/s: %.3f\n", r.images_per_s);
    printf("convolutions: Winograd in %d of %d conv layers, direct in the others\n", r.winograd_layers, r.conv_layers);
    printf("step: %.4f s (forward %.4f, backward %.4f, update %.4f); first step %.3f s; loss %.4f\n", r.step_s, r.forward_s,
           r.backward_s, r.update_s, r.first_step_s, r.final_loss);
    printf("peak memory (RSS): %.0f MB\n", r.peak_rss_mb);
    if (r.per_layer_text) {
        printf("\nper layer (mean per step over %d profiled steps; primitives alone: same buffers, back to back)\n%s", p.steps,
               r.per_layer_text);
        printf("framework overhead: %.1f%% of the step\n", 100.0 * r.overhead_share);
    }
    lp_bench_result_free(&r);
    return 0;
}
