/* loupe convert IN OUT.safetensors [--arch vgg16|vgg19]: pretrained weights
 * (Keras .h5, torchvision/timm safetensors, ONNX) to a loupe checkpoint. */
#include "cli.h"
#include <stdio.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: loupe convert IN OUT.safetensors [--arch vgg16|vgg19]\n\n"
            "Converts pretrained VGG16/VGG19 weights to a loupe checkpoint (safetensors with\n"
            "torchvision's tensor names, loadable by `loupe train --weights` and by\n"
            "torchvision.models.vgg16 with load_state_dict).\n\n"
            "IN is detected from its content:\n"
            "  Keras HDF5       .h5 from save_weights or model.save (notop or with fc1/fc2/predictions)\n"
            "  safetensors      torchvision (features.N.*, classifier.N.*) or timm (pre_logits.*, head.fc.*) names\n"
            "  ONNX             a VGG graph (torch.onnx.export, model zoo vgg16-7.onnx)\n\n"
            "options:\n"
            "  --arch A         vgg16 or vgg19 (default: inferred from the number of conv layers)\n"
            "  -h, --help       this help\n\n"
            "The checkpoint records the preprocessing the weights expect (caffe for Keras,\n"
            "torch for torchvision/timm/ONNX); `train --preprocess auto` uses it.\n");
}

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *arch = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--arch") || !strncmp(a, "--arch=", 7)) {
            const char *v = a[6] == '=' ? a + 7 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || (strcmp(v, "vgg16") && strcmp(v, "vgg19"))) {
                cli_error("convert", "--arch takes vgg16 or vgg19", NULL);
                return 2;
            }
            arch = v;
        } else if (a[0] == '-' && a[1]) {
            char msg[256];
            snprintf(msg, sizeof msg, "unknown option '%s'", a);
            cli_error("convert", msg, "run 'loupe convert --help'");
            return 2;
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            cli_error("convert", "too many arguments", "usage: loupe convert IN OUT.safetensors [--arch vgg16|vgg19]");
            return 2;
        }
    }
    if (!in || !out) {
        usage(stderr);
        return 2;
    }
    lp_weights_info info;
    lp_status s = lp_weights_convert(in, out, arch, &info);
    if (s == LP_ERR_NUMERIC) { /* NaN/Inf in the weights: bad data, not a runtime failure */
        cli_error("convert", lp_errmsg(), NULL);
        return 2;
    }
    if (s != LP_OK) return cli_fail("convert", s);
    printf("%s: %s weights, %s, top %s", in, info.source, info.arch, info.top);
    if (info.num_classes) printf(" (%d classes)", info.num_classes);
    printf(", %d tensors, %lld parameters\n", info.num_tensors, (long long)info.num_params);
    printf("wrote %s (preprocess: %s)\n", out, info.preprocess[0] ? info.preprocess : "unknown");
    return 0;
}
