/* io/weights: pretrained weights from the files users have (Keras HDF5,
 * torchvision/timm safetensors, ONNX, loupe checkpoints), returned in OUR
 * naming (torchvision's, and loupe's head.N for other heads):
 *
 *   features.N.weight   (O, I, 3, 3) OIHW float32   N = conv index in torchvision's
 *   features.N.bias     (O)                          vgg16/vgg19 `features` Sequential
 *   classifier.0.weight (4096, 25088) [out, in]      fc1: input is the (C, H, W) flatten
 *   classifier.0.bias   (4096)                       of the 512x7x7 feature map
 *   classifier.3.weight (4096, 4096), .bias          fc2
 *   classifier.6.weight (K, 4096), .bias             predictions (K classes)
 *   head.N.weight       [out, in], head.N.bias       any other head: N = the layer's
 *                                                    index in the head spec ("flatten,
 *                                                    dense:256:relu,dropout,dense:2":
 *                                                    head.1, head.3)
 *
 * Metadata set on the list:
 *   source      keras-h5 | torchvision | timm | pytorch (head.N names) | onnx | loupe
 *   arch        vgg16 | vgg19
 *   top         keep (torchvision's classifier) | none
 *   head        top=none with dense layers: the head spec, when the file tells it
 *   head_unknown  instead of head when the file cannot tell it: what is unknown
 *               (the tensors keep the file's head.N names; convert needs --head)
 *   input_size  HxW when known (ONNX input, the flatten's size, 224 for a
 *               classifier; what the caller asked)
 *   preprocess  caffe (Keras) | torch (torchvision, timm, ONNX) | from a loupe checkpoint
 *   num_classes outputs of the last dense layer
 * A loupe checkpoint keeps all its tensors (head.* too) and all its metadata
 * (its original "source" moves to "converted_from").
 */
#ifndef LP_IO_WEIGHTS_H
#define LP_IO_WEIGHTS_H

#include "core/core.h"
#include "nn/nn.h"

/* What the caller knows about the file. */
typedef struct lp_weights_opts {
    const char *arch; /* "vgg16", "vgg19" or NULL (inferred from the conv count) */
    const char *head; /* the head spec (convert --head), for files that cannot tell it; NULL */
    int in_h, in_w;   /* the input size asked for (convert --size); 0: from the file */
} lp_weights_opts;

/* Reads any supported weights file. The format is detected from the content:
 * HDF5 signature, safetensors header (u64 length + '{'), else an ONNX ModelProto
 * parse. Every tensor is checked (shape against the architecture, no NaN/Inf). */
lp_status lp_weights_read_ex(const char *path, const lp_weights_opts *o, lp_tensor_list *out);
/* The same with only an architecture hint ("vgg16", "vgg19" or NULL). */
lp_status lp_weights_read(const char *path, const char *arch_hint, lp_tensor_list *out);

/* The preprocessing the weights expect ("caffe", "torch", ...), or NULL. */
const char *lp_weights_preprocess(const lp_tensor_list *w);

/* Loads the backbone (features.*) and, when the net has them with the same
 * shapes, classifier.* / head.* into net (lp_net_load_state_dict, strict=false).
 * Weights for another architecture, or a backbone tensor that does not fit, are
 * an error naming both; head.* tensors whose names differ from the net's (a
 * PyTorch Sequential numbers its ReLUs, loupe does not) are matched by order
 * instead. Other tensors that do not fit (classifier.6 with 1000 classes for a
 * 2-class net, fc layers for a top=none net) are skipped. Reported, all
 * optional: *loaded tensors, *skipped and *missing (the net's parameters not in
 * w) as malloc'ed comma-separated names, NULL when none. */
lp_status lp_weights_load_into(lp_net *net, const lp_tensor_list *w, int *loaded, char **skipped, char **missing);

/* ---- shared by the format readers (src/io/keras_h5.c, src/io/onnx.c) ---- */

/* One layer as found in the source file, already in OUR layout (conv OIHW,
 * dense [out, in], Keras fc1 rows permuted to the C,H,W flatten) and F32. */
typedef enum lp_wlayer_kind {
    LP_WLAYER_CONV = 0,
    LP_WLAYER_DENSE,
    LP_WLAYER_BN, /* Keras BatchNormalization: w is (4, C), the rows gamma, beta, moving mean, moving variance */
    LP_WLAYER_NORM /* Keras Normalization: w is (2, C), the rows mean and variance; it computes
                      (x - mean) / sqrt(variance) */
} lp_wlayer_kind;
typedef struct lp_wlayer {
    lp_wlayer_kind kind;
    char src[160];        /* source name, for messages ("block1_conv1/kernel:0") */
    char node[160];       /* the ONNX node, for messages ("Gemm '/head/head.1/Gemm'"), else "" */
    char bsrc[160];       /* source name of the bias ("" when none) */
    char src_shape[64];   /* kernel shape as stored in the source ("(3, 3, 3, 64)") */
    int index;            /* features / classifier / head index when known from names, else -1 */
    int relu;             /* dense: a ReLU follows (1), none (0), the file does not tell (-1) */
    float dropout;        /* dense: a dropout follows with this probability (0: none; -1: not told) */
    lp_tensor w, b;       /* b may be empty (data == NULL) */
} lp_wlayer;

/* What joins the convolutional base to the first dense layer. */
typedef enum lp_wpool {
    LP_WPOOL_UNKNOWN = 0, /* the file does not tell */
    LP_WPOOL_FLATTEN,     /* flatten of the C,H,W map */
    LP_WPOOL_AVG7,        /* torchvision's avgpool to 7x7, then flatten */
    LP_WPOOL_GAP          /* global average pooling to 512 */
} lp_wpool;

typedef struct lp_wlayers {
    int count, cap;
    lp_wlayer *items;
    /* The head as far as the file tells (dense layers are items of kind DENSE). */
    lp_wpool pool;
    char pool_src[160];   /* where the pooling / flatten is, for messages */
    float pre_dropout;    /* dropout between the pooling and the first dense (0: none; -1: not told) */
    bool head_names;      /* dense indices are head.N positions (else classifier.N, or none) */
    int in_h, in_w;       /* input size the file fixes (ONNX input shape), 0: not fixed */
    /* Counts of things that are not VGG, for the "not a VGG16" message. */
    int foreign_count, foreign_conv_count; /* tensors/layers that are not VGG (conv-like: rank 4) */
    bool foreign_bn;                       /* batch-norm statistics seen */
    bool rescaled_after_norm;              /* a Rescaling layer follows the Normalization (Keras'
                                              EfficientNet with its ImageNet weights) */
    int n_examples, n_conv_examples;       /* up to 3 names each, distinct first components */
    char examples[3][96], conv_examples[3][96];
} lp_wlayers;

void lp_wlayers_free(lp_wlayers *l);
/* Appends a layer (relu, dropout: not told); takes ownership of w and b. */
lp_status lp_wlayers_push(lp_wlayers *l, lp_wlayer_kind kind, const char *src, const char *src_shape,
                          int index, lp_tensor *w, lp_tensor *b, const char *bsrc);

/* Records a tensor or layer that has no place in a VGG (for the message). */
void lp_wlayers_note_foreign(lp_wlayers *l, const char *name, bool conv_like);

/* Validates the layer sequence against VGG16/VGG19 (counts, shapes, NaN/Inf),
 * works out the head (keep, a head spec, or unknown) and the input size, and
 * moves the tensors into out with our names. source/preprocess go to meta. */
lp_status lp_weights_assemble(const char *path, lp_wlayers *layers, const lp_weights_opts *o,
                              const char *source, const char *preprocess, lp_tensor_list *out);

/* Helpers of the readers that map a source's names to torchvision's (weights.c). */
/* LP_ERR_NUMERIC naming the tensor (ours, and src in the file) unless every value is finite. */
lp_status lp_weights_check_finite(const char *path, const char *ours, const char *src, const lp_tensor *t);
/* A zero vector of n floats. */
lp_status lp_weights_zero_bias(lp_tensor *b, int64_t n);
/* The metadata of a torchvision features model (mobilenet_v2, efficientnet_b0): arch (checked
 * against the one asked for in o), and top keep (classifier.1 present, with num_classes) or none. */
lp_status lp_weights_features_meta(const char *path, const lp_weights_opts *o, const char *model, lp_tensor_list *out);
/* The Keras layer of an item: its source name up to the first '/'. */
void lp_keras_layer_name(const lp_wlayer *y, char *buf, size_t n);
/* A dense layer as ours.weight and ours.bias (zeros when it has none); takes y's tensors. */
lp_status lp_weights_add_linear(const char *path, lp_wlayer *y, const char *ours, lp_tensor_list *out);
/* The dense layer y of a Keras model's top as ours.weight and .bias: Keras' own predictions,
 * or a user's one Dense after GlobalAveragePooling2D (one unit, a sigmoid's logit z: two
 * classes, logits 0 and z); model names the base in messages. */
lp_status lp_keras_top_dense(const char *path, const lp_wlayers *L, lp_wlayer *y, const char *ours, const char *model,
                             lp_tensor_list *out);
/* A Keras batch norm (y, of kind BN) as torchvision's ours.weight, .bias, .running_mean,
 * .running_var, .num_batches_tracked: the bias of the conv before it (conv; NULL or without
 * bias: none) moves into the running mean, and Keras' epsilon (not in the weights) into the
 * running variance, so that PyTorch's 1e-5 computes the same function. */
lp_status lp_keras_bn_to_torch(const char *path, const lp_wlayer *y, const lp_wlayer *conv, float keras_eps, const char *ours,
                               lp_tensor_list *out);
/* The model arch (top keep, 2 classes, 3x224x224: the backbone's shapes do not depend on
 * them) built without initialising its weights, to read a file's tensors against. */
lp_status lp_weights_reference_net(const char *arch, lp_net **net);
/* Keras' MobileNetV2 and EfficientNetB0 (keras_mobile.c): the model the layers' names are of
 * (NULL: neither), and the tensors with torchvision's names, metadata padding = tf. */
const char *lp_keras_mobile_arch(const lp_wlayers *L);
lp_status lp_keras_mobile_map(const char *path, const lp_weights_opts *o, const char *arch, lp_wlayers *L, lp_tensor_list *out);

/* Format readers: fill layers in network order (convs then denses). */
lp_status lp_keras_h5_read_layers(const char *path, lp_wlayers *layers);
/* ONNX: a VGG chain goes to layers; a graph with residual Adds (unless o->arch is a VGG)
 * is read as a torchvision ResNet into resnet, a state dict with torchvision's names
 * (*is_resnet set; onnx_resnet.c). */
lp_status lp_onnx_read(const char *path, const lp_weights_opts *o, lp_wlayers *layers, lp_tensor_list *resnet, bool *is_resnet);

/* ImageNet's 1000 class names in class index order (data/imagenet_classes.txt,
 * compiled in), as a JSON array (malloc'ed). */
lp_status lp_imagenet_classes_json(char **out);

/* True when the first bytes look like the format. */
bool lp_weights_is_hdf5(const uint8_t *head, size_t n);
bool lp_weights_is_safetensors(const uint8_t *head, size_t n, uint64_t file_size);

#endif
