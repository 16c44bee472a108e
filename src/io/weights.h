/* io/weights: pretrained weights from the files users have (Keras HDF5,
 * torchvision/timm safetensors, ONNX, loupe checkpoints), returned in OUR
 * naming (torchvision's):
 *
 *   features.N.weight   (O, I, 3, 3) OIHW float32   N = conv index in torchvision's
 *   features.N.bias     (O)                          vgg16/vgg19 `features` Sequential
 *   classifier.0.weight (H1, 25088) [out, in]        fc1: input is the (C, H, W) flatten
 *   classifier.0.bias   (H1)                         of the 512x7x7 feature map
 *   classifier.3.weight (H2, H1), classifier.3.bias  fc2
 *   classifier.6.weight (K, H2),  classifier.6.bias  predictions (K classes)
 *
 * Metadata set on the list:
 *   source      keras-h5 | torchvision | timm | onnx | loupe
 *   arch        vgg16 | vgg19
 *   top         keep (fc layers present) | none
 *   preprocess  caffe (Keras) | torch (torchvision, timm, ONNX) | from a loupe checkpoint
 *   num_classes K when classifier.6 is present
 * A loupe checkpoint keeps all its tensors (head.* too) and all its metadata
 * (its original "source" moves to "converted_from").
 */
#ifndef LP_IO_WEIGHTS_H
#define LP_IO_WEIGHTS_H

#include "core/core.h"
#include "nn/nn.h"

/* Reads any supported weights file. The format is detected from the content:
 * HDF5 signature, safetensors header (u64 length + '{'), else an ONNX ModelProto
 * parse. arch_hint: "vgg16", "vgg19" or NULL (inferred from the conv count).
 * Every tensor is checked (shape against the architecture, no NaN/Inf). */
lp_status lp_weights_read(const char *path, const char *arch_hint, lp_tensor_list *out);

/* The preprocessing the weights expect ("caffe", "torch", ...), or NULL. */
const char *lp_weights_preprocess(const lp_tensor_list *w);

/* Loads the backbone (features.*) and, when the net has them with the same
 * shapes, classifier.* / head.* into net (lp_net_load_state_dict, strict=false).
 * A backbone tensor that does not fit is an error naming it and both shapes;
 * other tensors that do not fit (classifier.6 with 1000 classes for a 2-class
 * net, fc layers for a top=none net) are skipped and listed in *skipped
 * (malloc'ed, comma-separated, NULL when none; skipped may be NULL). */
lp_status lp_weights_load_into(lp_net *net, const lp_tensor_list *w, char **skipped);

/* ---- shared by the format readers (src/io/keras_h5.c, src/io/onnx.c) ---- */

/* One layer as found in the source file, already in OUR layout (conv OIHW,
 * dense [out, in], Keras fc1 rows permuted to the C,H,W flatten) and F32. */
typedef enum lp_wlayer_kind { LP_WLAYER_CONV = 0, LP_WLAYER_DENSE } lp_wlayer_kind;
typedef struct lp_wlayer {
    lp_wlayer_kind kind;
    char src[160];        /* source name, for messages ("block1_conv1/kernel:0") */
    char bsrc[160];       /* source name of the bias ("" when none) */
    char src_shape[64];   /* kernel shape as stored in the source ("(3, 3, 3, 64)") */
    int index;            /* torchvision features index when known from names, else -1 */
    lp_tensor w, b;       /* b may be empty (data == NULL) */
} lp_wlayer;

typedef struct lp_wlayers {
    int count, cap;
    lp_wlayer *items;
    /* Counts of things that are not VGG, for the "not a VGG16" message. */
    int foreign_count, foreign_conv_count; /* tensors/layers that are not VGG (conv-like: rank 4) */
    bool foreign_bn;                       /* batch-norm statistics seen */
    int n_examples, n_conv_examples;       /* up to 3 names each, distinct first components */
    char examples[3][96], conv_examples[3][96];
} lp_wlayers;

void lp_wlayers_free(lp_wlayers *l);
/* Appends a layer; takes ownership of w and b. */
lp_status lp_wlayers_push(lp_wlayers *l, lp_wlayer_kind kind, const char *src, const char *src_shape,
                          int index, lp_tensor *w, lp_tensor *b, const char *bsrc);

/* Records a tensor or layer that has no place in a VGG (for the message). */
void lp_wlayers_note_foreign(lp_wlayers *l, const char *name, bool conv_like);

/* Validates the layer sequence against VGG16/VGG19 (counts, shapes, NaN/Inf)
 * and moves the tensors into out with our names. source/preprocess go to meta. */
lp_status lp_weights_assemble(const char *path, lp_wlayers *layers, const char *arch_hint,
                              const char *source, const char *preprocess, lp_tensor_list *out);

/* Format readers: fill layers in network order (convs then denses). */
lp_status lp_keras_h5_read_layers(const char *path, lp_wlayers *layers);
lp_status lp_onnx_read_layers(const char *path, lp_wlayers *layers);

/* True when the first bytes look like the format. */
bool lp_weights_is_hdf5(const uint8_t *head, size_t n);
bool lp_weights_is_safetensors(const uint8_t *head, size_t n, uint64_t file_size);

#endif
