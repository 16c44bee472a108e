"""Shared helpers for the weights tests: Keras HDF5 files in exactly Keras 2's
legacy layout, VGG models and the logits comparison. safetensors files are read
and written with tests/safetensors_io.py."""
import json
import os
import subprocess
import sys

import numpy as np

CFG = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

FAILURES = []


def check(cond, msg):
    if not cond:
        FAILURES.append(msg)
        print("FAIL:", msg, flush=True)
    else:
        print("ok:", msg, flush=True)
    return cond


def remove(*paths):
    """Deletes fixtures once checked: the suite writes dozens of VGG-sized
    files (60-550 MB each) and must fit a CI machine's free disk."""
    for p in paths:
        if p and os.path.exists(p):
            os.remove(p)


def finish():
    if FAILURES:
        print("%d check(s) failed" % len(FAILURES))
        sys.exit(1)
    print("all checks passed")
    sys.exit(0)


# ---- the CLI ---------------------------------------------------------------------
def convert(cli, src, dst, arch=None):
    cmd = [cli, "convert", src, dst] + (["--arch", arch] if arch else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def run(cli, *args):
    p = subprocess.run([cli] + [str(a) for a in args], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def predict(cli, ckpt, image, *extra):
    """`loupe predict --json` of one image: (exit code, the JSON object or None, stderr)."""
    rc, so, se = run(cli, "predict", ckpt, image, "--json", *extra)
    return rc, (json.loads(so.strip().splitlines()[0]) if rc == 0 and so.strip() else None), se


# ---- images ------------------------------------------------------------------------
def write_ppm(path, img):
    """img: (H, W, 3) uint8, RGB."""
    h, w, _ = img.shape
    with open(path, "wb") as f:
        f.write(b"P6\n%d %d\n255\n" % (w, h) + np.ascontiguousarray(img, dtype=np.uint8).tobytes())


def random_image(size, seed):
    h, w = (size, size) if isinstance(size, int) else size
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def model_input(img, preprocess):
    """An image as loupe's predict feeds it to the model (no resize: img has the
    model's input size): (1, 3, H, W) float32."""
    x = img.astype(np.float64)
    if preprocess == "torch":
        x = (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    elif preprocess == "caffe":
        x = x[:, :, ::-1] - np.array([103.939, 116.779, 123.68])
    else:
        raise ValueError(preprocess)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)


def softmax(z):
    z = np.asarray(z, dtype=np.float64).reshape(-1)
    e = np.exp(z - z.max())
    return e / e.sum()


# ---- VGG in PyTorch ----------------------------------------------------------------
def torch_vgg(arch, hidden=(64, 64), classes=10, top=True, seed=0):
    """torchvision VGG with real conv shapes; the classifier widths are reduced
    (fc1 stays 25088 inputs) unless hidden is None. Biases are random so that
    the bias mapping is tested too."""
    import torch
    import torchvision
    torch.manual_seed(seed)
    if hidden is None:
        m = getattr(torchvision.models, arch)(weights=None, num_classes=classes)
    else:
        # torchvision's VGG class and features; the small classifier is built
        # directly (torchvision's 25088x4096 default would cost seconds to init)
        from torchvision.models import vgg as tv

        class SmallTopVGG(tv.VGG):
            def __init__(self):
                torch.nn.Module.__init__(self)
                self.features = tv.make_layers(tv.cfgs["D" if arch == "vgg16" else "E"])
                self.avgpool = torch.nn.AdaptiveAvgPool2d((7, 7))
                h1, h2 = hidden
                self.classifier = torch.nn.Sequential(
                    torch.nn.Linear(512 * 7 * 7, h1), torch.nn.ReLU(True), torch.nn.Dropout(),
                    torch.nn.Linear(h1, h2), torch.nn.ReLU(True), torch.nn.Dropout(),
                    torch.nn.Linear(h2, classes))
        m = SmallTopVGG()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.1)
    m.eval()
    return m


def load_into_torch(model, state, strict=True):
    import torch
    sd = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    model.load_state_dict(sd, strict=strict)
    model.eval()
    return model


def top_ok(meta, top, hidden=(64, 48), classes=10):
    """The converted top: none for a base alone, torchvision's classifier (top
    keep) at its 4096 widths, else a loupe head of the same dense layers."""
    if not top:
        return meta.get("top") == "none" and "head" not in meta
    if hidden is None:
        return meta.get("top") == "keep" and meta.get("num_classes") == str(classes)
    dense = [t for t in meta.get("head", "").split(",") if t.startswith("dense")]
    return (meta.get("top") == "none" and meta.get("head", "").startswith("flatten,") and meta.get("num_classes") == str(classes)
            and dense == ["dense:%d:relu" % hidden[0], "dense:%d:relu" % hidden[1], "dense:%d" % classes])


def torchvision_names(state, meta):
    """A converted checkpoint's tensors under torchvision's names: a head of
    three dense layers (head.N, in order) is classifier.0, .3 and .6."""
    if meta.get("top") != "none" or not meta.get("head"):
        return state
    dense = sorted({int(k.split(".")[1]) for k in state if k.startswith("head.")})
    ren = dict(zip(dense, (0, 3, 6)))
    out = {}
    for k, v in state.items():
        if k.startswith("head."):
            _, i, what = k.split(".")
            k = "classifier.%d.%s" % (ren[int(i)], what)
        out[k] = v
    return out


def rel_err(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# ---- Keras layout --------------------------------------------------------------------
HDF5_OBJECT_HEADER_LIMIT = 64512


def save_attributes_to_hdf5_group(group, name, data, limit=HDF5_OBJECT_HEADER_LIMIT):
    """Keras' own (keras/saving/legacy/hdf5_format.py), with the limit as a
    parameter so that tests can force the chunked name0..N form."""
    data_npy = np.asarray(data)
    num_chunks = 1
    chunked_data = np.array_split(data_npy, num_chunks)
    while any(x.nbytes > limit for x in chunked_data):
        num_chunks += 1
        chunked_data = np.array_split(data_npy, num_chunks)
    if num_chunks > 1:
        for chunk_id, chunk_data in enumerate(chunked_data):
            group.attrs["%s%d" % (name, chunk_id)] = chunk_data
    else:
        group.attrs[name] = data


def keras_vgg_layers(arch, top, hidden=(64, 64), classes=10, seed=0, dtype=np.float32):
    """Random Keras VGG weights: list of (layer_name, [arrays]) in Keras' order
    (model.layers, including the weightless input, pooling and flatten layers).
    Conv kernels (3, 3, in, out), dense kernels (in, out)."""
    rng = np.random.default_rng(seed)
    layers = [("input_1", [])]
    block, conv, cin = 1, 1, 3
    for v in CFG[arch]:
        if v == "M":
            layers.append(("block%d_pool" % block, []))
            block += 1
            conv = 1
            continue
        k = (rng.standard_normal((3, 3, cin, v)) * np.sqrt(2.0 / (9 * cin))).astype(dtype)
        b = (rng.standard_normal(v) * 0.1).astype(dtype)
        layers.append(("block%d_conv%d" % (block, conv), [k, b]))
        conv += 1
        cin = v
    if top:
        h1, h2 = hidden
        layers.append(("flatten", []))
        for name, i, o in (("fc1", 25088, h1), ("fc2", h1, h2), ("predictions", h2, classes)):
            k = (rng.standard_normal((i, o)) * np.sqrt(2.0 / i)).astype(dtype)
            b = (rng.standard_normal(o) * 0.1).astype(dtype)
            layers.append((name, [k, b]))
    return layers


def write_keras_h5(path, layers, naming="keras2", full_model=False, limit=HDF5_OBJECT_HEADER_LIMIT, nested=None):
    """Writes Keras 2's legacy HDF5 layout (save_weights_to_hdf5_group).
    naming keras2: weight names 'block1_conv1/kernel:0' (datasets in a subgroup);
    keras1: 'block1_conv1_W_1:0' (the original VGG16 release files).
    full_model: model.save layout (weights under /model_weights, model_config on the root).
    nested: name of a sub-model layer that holds all the conv layers (functional VGG16 inside a model)."""
    import h5py
    f = h5py.File(path, "w")
    if full_model:
        f.attrs["keras_version"] = b"2.11.0"
        f.attrs["backend"] = b"tensorflow"
        f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {"name": "vgg16"}}).encode()
        g = f.create_group("model_weights")
    else:
        g = f

    def wnames(lname, n):
        if naming == "keras2":
            return [("%s/kernel:0" % lname).encode(), ("%s/bias:0" % lname).encode()][:n]
        return [("%s_W_1:0" % lname).encode(), ("%s_b_1:0" % lname).encode()][:n]

    top_layers = layers
    if nested:
        inner = [l for l in layers if l[0].startswith("block") or l[0] == "input_1"]
        rest = [l for l in layers if not (l[0].startswith("block") or l[0] == "input_1")]
        top_layers = [("input_2", []), (nested, inner)] + rest
    save_attributes_to_hdf5_group(g, "layer_names", [n.encode("utf8") for n, _ in top_layers], limit)
    g.attrs["backend"] = b"tensorflow"
    g.attrs["keras_version"] = b"2.11.0"
    for lname, arrays in top_layers:
        lg = g.create_group(lname)
        if nested and lname == nested:
            names, vals = [], []
            for sub, arrs in arrays:
                names += wnames(sub, len(arrs))
                vals += arrs
        else:
            names, vals = wnames(lname, len(arrays)), list(arrays)
        save_attributes_to_hdf5_group(lg, "weight_names", names, limit)
        for n, v in zip(names, vals):
            d = lg.create_dataset(n.decode(), v.shape, dtype=v.dtype)
            if v.ndim:
                d[:] = v
    f.close()


def keras_forward(x_nhwc, layers, top, conv="numpy"):
    """The Keras model's function computed from the Keras arrays: NHWC 'same'
    3x3 convs (cross-correlation), ReLU, 2x2 max pooling, Flatten in (H, W, C)
    order, Dense x @ K + b, in float64 NumPy. Returns the pre-softmax logits
    (top) or the final NHWC feature map. conv="torch" runs the convs with
    torch's float32 conv2d instead (the NumPy im2col is slow at 224x224 with
    Debian's reference BLAS); the map stays NHWC between layers either way."""
    h = np.asarray(x_nhwc, dtype=np.float64)
    for name, arrs in layers:
        if "_conv" in name and conv == "torch":
            import torch
            k, b = arrs
            xt = torch.from_numpy(np.ascontiguousarray(h.transpose(0, 3, 1, 2), dtype=np.float32))
            wt = torch.from_numpy(np.ascontiguousarray(k.astype(np.float32).transpose(3, 2, 0, 1)))  # (kh,kw,in,out) -> OIHW
            with torch.no_grad():
                y = torch.nn.functional.conv2d(xt, wt, torch.from_numpy(b.astype(np.float32)), padding=1)
            h = np.maximum(y.numpy().astype(np.float64).transpose(0, 2, 3, 1), 0)
        elif "_conv" in name:
            k, b = arrs
            n, hh, ww, c = h.shape
            hp = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
            # im2col in (y, x, c) order = the kernel's (3, 3, in) order
            cols = np.concatenate([hp[:, y:y + hh, x:x + ww, :] for y in range(3) for x in range(3)], axis=-1)
            h = (cols.reshape(-1, 9 * c) @ k.astype(np.float64).reshape(9 * c, -1)).reshape(n, hh, ww, -1) + b
            h = np.maximum(h, 0)
        elif name.endswith("_pool"):
            n, hh, ww, c = h.shape
            h = h[:, :hh // 2 * 2, :ww // 2 * 2, :].reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
        elif name == "flatten":
            h = h.reshape(h.shape[0], -1)
        elif name in ("fc1", "fc2", "predictions"):
            k, b = arrs
            h = h @ k.astype(np.float64) + b
            if name != "predictions":
                h = np.maximum(h, 0)
    return h
