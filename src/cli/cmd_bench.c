/* loupe bench: training images/s on a synthetic batch, with the split
 * between forward (+loss), backward and the optimizer update. */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: loupe bench [--model vgg16|vgg19|tiny] [--top keep|none] [--head SPEC] [--size WxH]\n"
               "                   [--batch N] [--steps K] [--warmup W] [--classes N] [--freeze SPEC]\n"
               "                   [--optimizer sgd|adam|adamw] [--threads T] [--precision fp32|bf16|auto]\n"
               "                   [--conv auto|direct|winograd] [--per-layer]\n\n"
               "Trains on one synthetic batch and prints images/s over K timed steps (after W\n"
               "warmup steps that build the primitives), and the mean forward/backward/update\n"
               "time per step (as in training, conv layers on maps of <= 16 pixels apply their\n"
               "update inside backward, which then includes it). Defaults: vgg16, top keep, 224x224, batch 8, 5 steps, 1 warmup,\n"
               "SGD momentum 0.9, all cores, fp32. --precision bf16 runs convolutions and pooling in\n"
               "bf16 (AMX where present; refused on CPUs without native bf16), auto picks bf16\n"
               "where the CPU has AMX. --conv picks the fp32 3x3 convolutions' algorithm:\n"
               "auto (default) uses oneDNN's Winograd F(4x4,3x3) on maps of 8x8 or more with batch x map\n"
               ">= 1024 pixels, where it is faster than direct. --per-layer adds, per layer, the time inside a training step\n"
               "next to its kernels (oneDNN primitives, our pooling) run alone, the optimizer's update run alone\n"
               "(a memory-bound kernel of ours), and the framework overhead share: step minus all kernels alone.\n");
}

int cmd_bench(int argc, char **argv) {
    lp_bench_params p = lp_bench_default_params();
    long threads = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long n;
        char tail;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--model") && v) p.model.arch = v, i++;
        else if (!strcmp(a, "--top") && v) p.model.top = v, i++;
        else if (!strcmp(a, "--head") && v) p.model.head = v, i++;
        else if (!strcmp(a, "--freeze") && v) p.model.freeze = v, i++;
        else if (!strcmp(a, "--optimizer") && v) p.optimizer = v, i++;
        else if (!strcmp(a, "--per-layer")) p.per_layer = 1;
        else if (!strcmp(a, "--precision") && v) p.precision = v, i++; /* names checked by lp_bench_run */
        else if (!strcmp(a, "--conv") && v) p.conv_algo = v, i++;
        else if (!strcmp(a, "--size") && v && sscanf(v, "%dx%d%c", &p.model.in_width, &p.model.in_height, &tail) == 2 &&
                 p.model.in_width > 0 && p.model.in_height > 0)
            i++;
        else if (!strcmp(a, "--batch") && v && cli_parse_int(v, 1, 4096, &n)) p.batch = (int)n, i++;
        else if (!strcmp(a, "--steps") && v && cli_parse_int(v, 1, 100000, &n)) p.steps = (int)n, i++;
        else if (!strcmp(a, "--warmup") && v && cli_parse_int(v, 0, 1000, &n)) p.warmup = (int)n, i++;
        else if (!strcmp(a, "--classes") && v && cli_parse_int(v, 1, 100000, &n)) p.model.num_classes = (int)n, i++;
        else if (!strcmp(a, "--threads") && v && cli_parse_int(v, 0, 1024, &threads)) i++;
        else {
            char msg[256];
            snprintf(msg, sizeof msg, "bad option or value: %s%s%s", a, v ? " " : "", v ? v : "");
            cli_error("bench", msg, "run 'loupe bench --help'");
            return 2;
        }
    }
    if (!strcmp(p.model.top, "none") && !p.model.head) p.model.head = "flatten,dense";
    lp_set_threads((int)threads);
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
