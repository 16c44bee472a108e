"""An independent reference for Keras 2's keras.applications.MobileNetV2 (alpha 1.0)
and keras.applications.EfficientNetB0: random weights under Keras' layer names and
shapes, their Keras 2 HDF5 file (model.save_weights('x.h5')), Keras' function in torch,
and the same tensors under torchvision's state-dict names.

Written from Keras 2.11-2.13 (tag v2.13.1; identical in these respects to v2.11.0):
  keras/applications/mobilenet_v2.py  MobileNetV2(), _inverted_res_block()
  keras/applications/efficientnet.py  EfficientNet(), block(), DEFAULT_BLOCKS_ARGS
  keras/applications/imagenet_utils.py correct_pad()
  keras/layers/preprocessing/normalization.py Normalization.build()/call()
  keras/layers/normalization/batch_normalization.py (default epsilon=1e-3)
  keras/engine/functional.py _map_graph_network() (model.layers order)
Both graphs are chains with skip edges only (no two layers at the same depth), so
model.layers, hence the file's layer_names, is the layers' creation order."""
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wcommon as W  # noqa: E402

ARCHS = ("mobilenet_v2", "efficientnet_b0")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]  # efficientnet.py IMAGENET_STDDEV_RGB

# MobileNetV2(): _inverted_res_block(filters, stride, expansion) for block_id 0..16
MBV2 = [(16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6), (64, 1, 6),
        (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6), (320, 1, 6)]
# efficientnet.py DEFAULT_BLOCKS_ARGS (B0: width and depth coefficients 1.0, so no rounding
# changes): (kernel_size, repeats, filters_in, filters_out, expand_ratio, strides); se_ratio
# 0.25 and id_skip True everywhere
EFFB0 = [(3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2), (5, 3, 80, 112, 6, 1),
         (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1)]


def mbv2_blocks():
    """Per block: (keras prefix, cin, expanded, cout, stride, residual)."""
    out, cin = [], 32
    for i, (f, s, e) in enumerate(MBV2):
        # block 0 has no expand conv and its prefix is "expanded_conv_" (_inverted_res_block)
        out.append(("block_%d_" % i if i else "expanded_conv_", cin, cin * e, f, s, cin == f and s == 1))
        cin = f
    return out


def effb0_blocks():
    """Per block: (keras prefix, stage i, index j, kernel, fin, expanded, fout, stride, se, skip, drop_rate)."""
    out, b, total = [], 0, float(sum(a[1] for a in EFFB0))
    for i, (k, rep, fin, fout, e, s) in enumerate(EFFB0):
        for j in range(rep):
            if j > 0:
                s, fin = 1, fout
            out.append(("block%d%s_" % (i + 1, chr(j + 97)), i + 1, j, k, fin, fin * e, fout, s, max(1, int(fin * 0.25)),
                        s == 1 and fin == fout, 0.2 * b / total))  # drop_connect_rate * b / blocks
            b += 1
    return out


# ---- random weights in Keras' shapes and layer order --------------------------------------
def keras_layers(arch, classes, rng, rescaling_1=True, calibrate=224):
    """[(layer_name, [float32 arrays])] in model.layers order, weightless layers with [].
    rescaling_1: EfficientNet() adds that layer only when built with weights="imagenet".
    calibrate (an image size, or 0): the He-initialized kernels are then rescaled (LSUV-style,
    one forward pass on a random calibrate x calibrate image) so that every batch norm sees
    unit-std inputs and the logits have std ~1. With random batch-norm statistics a plain He
    net drifts: EfficientNet's swish/SE chain collapses to ~0.1 or blows up to ~1e3 with the
    seed. Calibrating at 224 (Keras' default size) keeps 64..224 inputs at stage std ~0.1-2;
    at 64 the zero-padding border dominates the deep maps and EfficientNet calibrated
    there grows ~10-100x at 224."""
    f32 = np.float32

    def conv(k, cin, cout, bias=False, gain=2.0):  # He-scaled kernel (kh, kw, in, out) (+ bias)
        w = [(rng.standard_normal((k, k, cin, cout)) * math.sqrt(gain / (k * k * cin))).astype(f32)]
        return w + ([(rng.standard_normal(cout) * 0.1).astype(f32)] if bias else [])

    def dw(k, c):  # DepthwiseConv2D depthwise_kernel (kh, kw, C, depth_multiplier=1)
        return [(rng.standard_normal((k, k, c, 1)) * math.sqrt(2.0 / (k * k))).astype(f32)]

    def bn(c):  # gamma, beta, moving_mean, moving_variance
        return [rng.uniform(0.5, 1.0, c).astype(f32), (rng.standard_normal(c) * 0.1).astype(f32),
                (rng.standard_normal(c) * 0.1).astype(f32), rng.uniform(0.5, 2.0, c).astype(f32)]

    def dense(cin):
        return [(rng.standard_normal((cin, classes)) * math.sqrt(1.0 / cin)).astype(f32), (rng.standard_normal(classes) * 0.1).astype(f32)]

    L = [("input_1", [])]
    if arch == "mobilenet_v2":
        # Conv1 is Conv2D(padding="same", strides=2) (tags v2.6.0-v2.15.0): no Conv1_pad layer
        L += [("Conv1", conv(3, 3, 32)), ("bn_Conv1", bn(32)), ("Conv1_relu", [])]
        for p, cin, c, cout, s, res in mbv2_blocks():
            if p != "expanded_conv_":
                L += [(p + "expand", conv(1, cin, c)), (p + "expand_BN", bn(c)), (p + "expand_relu", [])]
            L += [(p + "pad", [])] if s == 2 else []  # ZeroPadding2D(correct_pad(x, 3)) + 'valid'
            L += [(p + "depthwise", dw(3, c)), (p + "depthwise_BN", bn(c)), (p + "depthwise_relu", []),
                  (p + "project", conv(1, c, cout)), (p + "project_BN", bn(cout))]
            L += [(p + "add", [])] if res else []
        # GlobalAveragePooling2D() has no name argument: Keras' automatic name in a fresh session
        L += [("Conv_1", conv(1, 320, 1280)), ("Conv_1_bn", bn(1280)), ("out_relu", []), ("global_average_pooling2d", []),
              ("predictions", dense(1280))]
    elif arch == "efficientnet_b0":
        # Rescaling(1/255), Normalization(axis=3) (weights mean, variance, count) and, only when
        # weights == "imagenet", Rescaling(1/sqrt(IMAGENET_STDDEV_RGB)): automatic names.
        # Keras' imagenet file holds variance = the std values (tensorflow/tensorflow#49930),
        # and rescaling_1 divides by sqrt(std) once more so the net gets (x/255 - mean) / std.
        norm = [np.array(IMAGENET_MEAN, f32), np.array(IMAGENET_STD, f32), np.array(0, np.int64)]
        L += [("rescaling", []), ("normalization", norm)] + ([("rescaling_1", [])] if rescaling_1 else [])
        L += [("stem_conv_pad", []), ("stem_conv", conv(3, 3, 32)), ("stem_bn", bn(32)), ("stem_activation", [])]
        for p, _, _, k, fin, c, fout, s, cse, skip, drop in effb0_blocks():
            if c != fin:  # expand_ratio != 1
                L += [(p + "expand_conv", conv(1, fin, c)), (p + "expand_bn", bn(c)), (p + "expand_activation", [])]
            L += [(p + "dwconv_pad", [])] if s == 2 else []
            L += [(p + "dwconv", dw(k, c)), (p + "bn", bn(c)), (p + "activation", []), (p + "se_squeeze", []), (p + "se_reshape", []),
                  (p + "se_reduce", conv(1, c, cse, bias=True)), (p + "se_expand", conv(1, cse, c, bias=True, gain=1.0)),
                  (p + "se_excite", []), (p + "project_conv", conv(1, c, fout)), (p + "project_bn", bn(fout))]
            if skip:  # block(): Dropout(drop_rate, noise_shape=(None,1,1,1)) only if drop_rate > 0
                L += ([(p + "drop", [])] if drop > 0 else []) + [(p + "add", [])]
        L += [("top_conv", conv(1, 320, 1280)), ("top_bn", bn(1280)), ("top_activation", []), ("avg_pool", []), ("top_dropout", []),
              ("predictions", dense(1280))]
    else:
        raise ValueError(arch)
    if calibrate:
        shape = (1, 3, calibrate, calibrate)
        x = rng.uniform(-1, 1, shape) if arch == "mobilenet_v2" else rng.uniform(0, 255, shape)
        keras_forward(arch, L, torch.from_numpy(x), _calibrate=True)
    return L


# ---- Keras 2's HDF5 layout ------------------------------------------------------------------
def weight_names(name, arrays):
    """Keras' variable names (weight.name, 'layer/var:0') of a layer's weights, in order."""
    if not arrays:
        return []
    if name == "normalization":  # Normalization.build(): adapt_mean, adapt_variance, count
        v = ["mean", "variance", "count"]
    elif len(arrays) == 4:
        v = ["gamma", "beta", "moving_mean", "moving_variance"]
    elif name.endswith(("depthwise", "dwconv")):
        v = ["depthwise_kernel"]
    else:
        v = ["kernel", "bias"][:len(arrays)]
    return ["%s/%s:0" % (name, n) for n in v]


def write_keras_h5(path, layers, top_level=True):
    """keras/saving/legacy/hdf5_format.py save_weights_to_hdf5_group() (2.11-2.13): root attrs
    layer_names/backend/keras_version, one group per layer (created in name order) with attr
    weight_names and datasets via save_subset_weights_to_hdf5_group(); top_level: also the
    group "top_level_model_weights" (the model's own weights: none, so weight_names only)
    that Keras 2.8+ writes and that is not in layer_names."""
    import h5py
    with h5py.File(path, "w") as f:
        W.save_attributes_to_hdf5_group(f, "layer_names", [n.encode("utf8") for n, _ in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.13.1"
        for name, arrays in sorted(layers, key=lambda l: l[0]):
            g = f.create_group(name)
            names = weight_names(name, arrays)
            # [] -> np.asarray([]) is an empty float64 array, as Keras writes it
            W.save_attributes_to_hdf5_group(g, "weight_names", [n.encode("utf8") for n in names])
            for n, v in zip(names, arrays):
                v = np.asarray(v)
                d = g.create_dataset(n, v.shape, dtype=v.dtype)  # "Conv1/kernel:0": subgroup Conv1
                if v.shape:
                    d[:] = v
                else:
                    d[()] = v
        if top_level:
            W.save_attributes_to_hdf5_group(f.create_group("top_level_model_weights"), "weight_names", [])


# ---- Keras' function in torch ---------------------------------------------------------------
def _pad(x, k, s, tf_padding):
    """Zero padding before a 'valid' conv. TF 'same' (and, for known input sizes, Keras'
    ZeroPadding2D(correct_pad(x, k)): (k//2 - 1, k//2) on even sizes, (k//2, k//2) on odd)
    puts the extra row/column after; tf_padding=False pads (k-1)//2 on every side."""
    if not tf_padding:
        p = (k - 1) // 2
        return F.pad(x, (p, p, p, p))
    pads = []
    for n in (x.shape[3], x.shape[2]):  # F.pad order: W then H
        tot = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [tot // 2, tot - tot // 2]
    return F.pad(x, pads)


def keras_forward(arch, layers, x_nchw, tf_padding=True, bn_eps=1e-3, _calibrate=False):
    """The logits (pre-softmax predictions) of Keras' model, in x_nchw's dtype.
    MobileNetV2: x already preprocessed (x / 127.5 - 1). EfficientNetB0: raw 0..255 pixels.
    _calibrate (keras_layers): scales, in place, the bias-free kernels (all followed by batch
    norm) to unit-std outputs and the predictions kernel to unit-std logits."""
    Wt = {n: [torch.as_tensor(np.asarray(a, np.float64)).to(x_nchw.dtype) for a in arrs] for n, arrs in layers}
    names, arrays = set(Wt), dict(layers)

    def conv(x, n, s=1, groups=1):
        w = Wt[n][0]
        w = w.permute(2, 3, 0, 1) if groups > 1 else w.permute(3, 2, 0, 1)  # (kh,kw,C,1)->(C,1,kh,kw); (kh,kw,i,o)->(o,i,kh,kw)
        k = w.shape[-1]
        x = _pad(x, k, s, tf_padding) if k > 1 else x
        y = F.conv2d(x, w, Wt[n][1] if len(Wt[n]) > 1 else None, stride=s, groups=groups)
        if _calibrate and len(Wt[n]) == 1:
            f = 1.0 / float(y.std())
            arrays[n][0] *= np.float32(f)
            y = y * f
        return y

    def bn(x, n):  # BatchNormalization in inference: moving statistics
        g, b, m, v = (t.view(1, -1, 1, 1) for t in Wt[n])
        return (x - m) / torch.sqrt(v + bn_eps) * g + b

    relu6 = lambda t: torch.clamp(t, 0.0, 6.0)  # noqa: E731  layers.ReLU(6.0)
    if arch == "mobilenet_v2":
        x = relu6(bn(conv(x_nchw, "Conv1", 2), "bn_Conv1"))
        for p, cin, c, cout, s, res in mbv2_blocks():
            h = x if p == "expanded_conv_" else relu6(bn(conv(x, p + "expand"), p + "expand_BN"))
            h = relu6(bn(conv(h, p + "depthwise", s, groups=c), p + "depthwise_BN"))
            h = bn(conv(h, p + "project"), p + "project_BN")  # linear bottleneck
            x = x + h if res else h  # Add()([inputs, x]) when in_channels == filters and stride 1
        x = relu6(bn(conv(x, "Conv_1"), "Conv_1_bn"))
    elif arch == "efficientnet_b0":
        x = x_nchw / 255.0  # Rescaling(1/255)
        m, v = (t.view(1, -1, 1, 1) for t in Wt["normalization"][:2])
        x = (x - m) / torch.clamp(torch.sqrt(v), min=1e-7)  # Normalization.call(): / maximum(sqrt(var), backend.epsilon())
        if "rescaling_1" in names:
            x = x * torch.tensor([1.0 / math.sqrt(s) for s in IMAGENET_STD], dtype=x.dtype).view(1, -1, 1, 1)
        x = F.silu(bn(conv(x, "stem_conv", 2), "stem_bn"))  # activation "swish" = x * sigmoid(x)
        for p, _, _, k, fin, c, fout, s, cse, skip, drop in effb0_blocks():
            h = x if c == fin else F.silu(bn(conv(x, p + "expand_conv"), p + "expand_bn"))
            h = F.silu(bn(conv(h, p + "dwconv", s, groups=c), p + "bn"))
            se = h.mean(dim=(2, 3), keepdim=True)  # se_squeeze + se_reshape to (1, 1, filters)
            se = torch.sigmoid(conv(F.silu(conv(se, p + "se_reduce")), p + "se_expand"))
            h = bn(conv(h * se, p + "project_conv"), p + "project_bn")  # se_excite = multiply
            x = x + h if skip else h  # drop (Dropout) is the identity in inference
        x = F.silu(bn(conv(x, "top_conv"), "top_bn"))
    else:
        raise ValueError(arch)
    x = x.mean(dim=(2, 3))  # GlobalAveragePooling2D; top_dropout is the identity
    k, b = Wt["predictions"]
    if _calibrate:  # kernel ~ N(0, 1/in): logit std = rms of the pooled features
        f = 1.0 / float(x.pow(2).mean().sqrt())
        arrays["predictions"][0] *= np.float32(f)
        k = k * f
    return x @ k + b


# ---- the same tensors under torchvision's names ---------------------------------------------
def to_torchvision(arch, layers, bn_eps_target=1e-5, bn_eps=1e-3):
    """torchvision.models.mobilenet_v2 / efficientnet_b0 state dict (numpy arrays). Batch-norm
    running_var gets + (bn_eps - bn_eps_target) so torchvision's eps computes Keras' function.
    EfficientNet's rescaling/normalization layers have no torchvision counterpart: torchvision
    takes (x/255 - mean)/std, which is Keras' stem input when variance = std and rescaling_1."""
    K = dict(layers)
    sd = {}

    def conv(t, n, depthwise=False):
        w = K[n][0]
        sd[t + ".weight"] = np.ascontiguousarray(w.transpose(2, 3, 0, 1) if depthwise else w.transpose(3, 2, 0, 1))
        if len(K[n]) > 1:
            sd[t + ".bias"] = K[n][1].copy()

    def bn(t, n):
        g, b, m, v = K[n]
        sd.update({t + ".weight": g.copy(), t + ".bias": b.copy(), t + ".running_mean": m.copy(),
                   t + ".running_var": (v.astype(np.float64) + (bn_eps - bn_eps_target)).astype(v.dtype),
                   t + ".num_batches_tracked": np.array(0, np.int64)})

    if arch == "mobilenet_v2":
        conv("features.0.0", "Conv1"), bn("features.0.1", "bn_Conv1")
        for i, (p, *_rest) in enumerate(mbv2_blocks()):
            t, j = "features.%d.conv." % (i + 1), 0
            if p != "expanded_conv_":  # InvertedResidual: [expand ConvBNReLU6], dw ConvBNReLU6, conv, bn
                conv(t + "0.0", p + "expand"), bn(t + "0.1", p + "expand_BN")
                j = 1
            conv(t + "%d.0" % j, p + "depthwise", True), bn(t + "%d.1" % j, p + "depthwise_BN")
            conv(t + "%d" % (j + 1), p + "project"), bn(t + "%d" % (j + 2), p + "project_BN")
        conv("features.18.0", "Conv_1"), bn("features.18.1", "Conv_1_bn")
    elif arch == "efficientnet_b0":
        conv("features.0.0", "stem_conv"), bn("features.0.1", "stem_bn")
        for p, i, j, k, fin, c, *_rest in effb0_blocks():
            t, m = "features.%d.%d.block." % (i, j), 0
            if c != fin:  # MBConv.block: [expand], dw, SqueezeExcitation(fc1, fc2), project
                conv(t + "0.0", p + "expand_conv"), bn(t + "0.1", p + "expand_bn")
                m = 1
            conv(t + "%d.0" % m, p + "dwconv", True), bn(t + "%d.1" % m, p + "bn")
            conv(t + "%d.fc1" % (m + 1), p + "se_reduce"), conv(t + "%d.fc2" % (m + 1), p + "se_expand")
            conv(t + "%d.0" % (m + 2), p + "project_conv"), bn(t + "%d.1" % (m + 2), p + "project_bn")
        conv("features.8.0", "top_conv"), bn("features.8.1", "top_bn")
    else:
        raise ValueError(arch)
    k, b = K["predictions"]
    sd["classifier.1.weight"], sd["classifier.1.bias"] = np.ascontiguousarray(k.T), b.copy()
    return sd
