/* loupe convert IN OUT.safetensors [--arch A] [--head SPEC] [--size WxH] [--classes a,b,...]:
 * pretrained weights or a whole model (Keras .h5, torchvision/timm/PyTorch
 * safetensors, ONNX) to a loupe checkpoint that predicts and evaluates as it is. */
#include "cli.h"
#include <stdio.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out,
            "usage: loupe convert IN OUT.safetensors [--arch A] [--head SPEC] [--size WxH] [--classes a,b,...]\n\n"
            "Converts VGG16/VGG19, ResNet-18/34/50, MobileNetV2 or EfficientNet-B0 weights, or a whole model\n"
            "built on them, to a loupe\n"
            "checkpoint (safetensors; torchvision's tensor names for the base and its own classifier,\n"
            "which torchvision.models.vgg16 or resnet50 loads with load_state_dict; head.N for other\n"
            "heads). `loupe train\n"
            "--weights` reads it; with a classifier it predicts and evaluates at once:\n"
            "`loupe predict OUT.safetensors photo.png`.\n\n"
            "IN is detected from its content:\n"
            "  Keras HDF5       .h5 from save_weights or model.save (notop, with fc1/fc2/predictions,\n"
            "                   or a Flatten/GlobalAveragePooling2D and Dense layers); Keras' ResNet50\n"
            "                   (ResNet v1 strides, recorded in the checkpoint)\n"
            "  safetensors      torchvision (features.N.*, classifier.N.*), timm (pre_logits.*, head.fc.*)\n"
            "                   or a PyTorch Sequential with loupe's names (features.N.*, head.N.*);\n"
            "                   a torchvision/timm ResNet state dict (conv1, bn1, layerS.B.*, fc)\n"
            "  ONNX             a VGG graph (torch.onnx.export, model zoo vgg16-7.onnx); its head may be\n"
            "                   Flatten or GlobalAveragePool, then Gemm/MatMul layers with Relu and Dropout;\n"
            "                   a torchvision ResNet (batch norm as nodes or folded into the convs), its fc\n"
            "                   or none\n\n"
            "options:\n"
            "  --arch A         vgg16, vgg19, resnet18, resnet34, resnet50, mobilenet_v2 or efficientnet_b0 (default: inferred from the\n"
            "                   layers)\n"
            "  --head SPEC      the head where the file cannot tell it (a state dict's head.N: flatten\n"
            "                   or gap? ReLUs?), e.g. gap,dense:2 or flatten,dense:256:relu,dropout,dense:2\n"
            "  --size WxH       input size, as for train (or N for NxN; default: the ONNX input's, the one the\n"
            "                   flatten's size fixes, else 224x224)\n"
            "  --classes a,b    class names in output order (default: ImageNet's names for 1000\n"
            "                   outputs, else class_0, class_1, ...)\n"
            "  -h, --help       this help\n\n"
            "The checkpoint records the preprocessing the weights expect (caffe for Keras,\n"
            "torch for torchvision/timm/ONNX); `train --preprocess auto`, predict and evaluate use it.\n");
}

/* --size WxH or N, each side from 32 (VGG's smallest input) within the CLI's size
 * limits (lp_weights_convert_params *). */
static bool parse_size(const char *v, void *dest) {
    lp_weights_convert_params *p = dest;
    return cli_parse_size(v, 32, true, &p->in_width, &p->in_height);
}

int cmd_convert(int argc, char **argv) {
    lp_weights_convert_params p = lp_weights_convert_default_params();
    int nargs;
    const cli_option opts[] = {
        {"--arch", CLI_CHOICE, &p.arch, .expects = "vgg16|vgg19|resnet18|resnet34|resnet50|mobilenet_v2|efficientnet_b0"},
        {"--head", CLI_CUSTOM, &p.head, .parse = cli_parse_nonempty, .expects = "a head spec",
         .hint = "e.g. --head gap,dense:2"},
        {"--classes", CLI_CUSTOM, &p.classes, .parse = cli_parse_nonempty, .expects = "class names",
         .hint = "e.g. --classes cat,dog"},
        {"--size", CLI_CUSTOM, &p, .parse = parse_size,
         .expects = "WxH or N, each side 32 to 65536, W*H at most 67108864 pixels (8192x8192)",
         .hint = "e.g. --size 224x224"},
        {0},
    };
    const cli_parser parser = {.cmd = "convert", .options = opts, .max_args = 2, .equals_form = true};
    int rc = cli_parse_options(&parser, argc, argv, &nargs);
    if (rc == CLI_HELP) {
        usage(stdout);
        return 0;
    }
    if (rc) return rc;
    if (nargs > 2) {
        cli_error("convert", "too many arguments", "usage: loupe convert IN OUT.safetensors [options]");
        return 2;
    }
    p.in = nargs > 0 ? argv[1] : NULL;
    p.out = nargs > 1 ? argv[2] : NULL;
    if (!p.in || !p.out) {
        usage(stderr);
        return 2;
    }
    lp_weights_info info;
    lp_status s = lp_weights_convert_ex(&p, &info);
    if (s == LP_ERR_NUMERIC) { /* NaN/Inf in the weights: bad data, not a runtime failure */
        cli_error("convert", lp_errmsg(), NULL);
        return 2;
    }
    if (s != LP_OK) return cli_fail("convert", s);
    printf("%s: %s weights, %s, ", p.in, info.source, info.arch);
    if (info.head[0]) printf("head %s", info.head);
    else printf("top %s", info.top);
    if (info.num_classes) printf(" (%d classes)", info.num_classes);
    printf(", %d tensors, %lld parameters\n", info.num_tensors, (long long)info.num_params);
    printf("wrote %s (preprocess: %s", p.out, info.preprocess[0] ? info.preprocess : "unknown");
    if (info.in_height) printf(", input %dx%d (WxH)", info.in_width, info.in_height);
    printf(")\n");
    if (!info.num_classes) printf("a convolutional base alone: train a head on it with `loupe train DATA --weights %s`\n", p.out);
    return 0;
}
