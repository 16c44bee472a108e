"""Seed corpora for the fuzz targets, written at fuzz/test time (nothing binary
is kept in the repository): small valid files of every format each target
reads, plus a few near-misses.

usage: make_seeds.py OUTDIR [LOUPE]
  OUTDIR/<target>/ for target in decode, safetensors, weights, h5, diag_run.
  LOUPE (optional): the CLI, used to add a real checkpoint and run directory
  written by `loupe train` (tiny model, 1 epoch)."""
import json, os, shutil, subprocess, sys, tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "train"))
sys.path.insert(0, os.path.join(HERE, "..", "data"))
sys.path.insert(0, os.path.join(HERE, "..", "weights"))
sys.path.insert(0, os.path.join(HERE, ".."))
import make_data  # noqa: E402
import safetensors_io as st  # noqa: E402

SEP = b"\n\0#\n"  # fuzz_diag_run.c splits its input into files on this


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def noise(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def decode_seeds(d):
    rgb = noise(19, 11, 1)
    rgb.save(os.path.join(d, "a.jpg"), quality=70)
    rgb.save(os.path.join(d, "p.jpg"), quality=70, progressive=True)
    rgb.convert("CMYK").save(os.path.join(d, "c.jpg"))
    rgb.convert("L").save(os.path.join(d, "g.jpg"))
    rgb.save(os.path.join(d, "a.png"))
    rgb.convert("P", palette=Image.ADAPTIVE, colors=8).save(os.path.join(d, "p.png"), transparency=1)
    rgb.convert("LA").save(os.path.join(d, "la.png"))
    rgb.save(os.path.join(d, "a.bmp"))
    rgb.convert("P").save(os.path.join(d, "p.bmp"))
    rgb.save(os.path.join(d, "a.ppm"))
    rgb.convert("L").save(os.path.join(d, "a.pgm"))
    rgb.save(os.path.join(d, "a.tif"))
    rgb.save(os.path.join(d, "a.webp"), lossless=True)
    rgb.save(os.path.join(d, "l.webp"), quality=50)
    try:  # 16-bit interlaced PNG (PIL cannot write it)
        import fixtures
        fixtures.write_png(os.path.join(d, "i.png"), np.array(rgb).astype(np.uint16) * 200, depth=16, interlace=True)
    except Exception:  # noqa: BLE001 - optional
        pass
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate
    rgb.save(os.path.join(d, "exif.jpg"), exif=exif)


def loupe_meta(**kw):
    m = {"format": "loupe-checkpoint-1", "arch": "tiny", "top": "none", "head": "flatten,dense",
         "num_classes": "2", "classes": json.dumps(["a", "b"]), "input_size": "32x32", "in_channels": "3",
         "preprocess": "rescale", "loupe_version": "0.1.0"}
    m.update(kw)
    return m


def safetensors_seeds(d):
    rng = np.random.default_rng(0)
    st.write(os.path.join(d, "ckpt.safetensors"),
             {"features.0.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "features.0.bias": np.zeros(4, np.float32), "head.1.weight": np.ones((2, 16), np.float32),
              "head.1.bias": np.zeros(2, np.float32)}, loupe_meta())
    st.write(os.path.join(d, "dtypes.safetensors"),
             {"a": np.arange(6, dtype=np.float16).reshape(2, 3), "b": np.arange(3, dtype=np.int64),
              "c": np.zeros((0, 4), np.float32), "d": np.float32(3.0).reshape(())}, {"k": "v"})
    bf = (np.arange(4, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    # headers exactly as given, unpadded
    st.write_raw(os.path.join(d, "bf16.safetensors"), {"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]},
                                                       "y": {"dtype": "U8", "shape": [2, 2], "data_offsets": [8, 12]}},
                 bf + b"\1\2\3\4", pad=False)
    st.write_raw(os.path.join(d, "meta_only.safetensors"), {"__metadata__": loupe_meta(input_size="224x224")}, pad=False)
    st.write_raw(os.path.join(d, "overlap.safetensors"),
                 {"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                  "y": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12, pad=False)


def keras_h5_seeds(d):
    try:
        import wcommon as W
    except Exception as e:  # noqa: BLE001 - h5py missing: skip this format
        print("no Keras HDF5 seeds (%s)" % e)
        return
    rng = np.random.default_rng(1)
    small = [("input_1", []), ("block1_conv1", [rng.standard_normal((3, 3, 3, 4)).astype(np.float32), np.zeros(4, np.float32)]),
             ("block1_conv2", [rng.standard_normal((3, 3, 4, 4)).astype(np.float32), np.zeros(4, np.float32)]),
             ("block1_pool", []), ("flatten", []),
             ("fc1", [rng.standard_normal((16, 8)).astype(np.float32), np.zeros(8, np.float32)]),
             ("predictions", [rng.standard_normal((8, 2)).astype(np.float32), np.zeros(2, np.float32)])]
    W.write_keras_h5(os.path.join(d, "k2.h5"), small)
    W.write_keras_h5(os.path.join(d, "k1.h5"), small, naming="keras1")
    W.write_keras_h5(os.path.join(d, "full.h5"), small, full_model=True)
    W.write_keras_h5(os.path.join(d, "chunked.h5"), small, limit=64)
    W.write_keras_h5(os.path.join(d, "nested.h5"), small, nested="vgg16")
    f16 = [(n, [a.astype(np.float16) for a in arrs]) for n, arrs in small]
    W.write_keras_h5(os.path.join(d, "f16.h5"), f16)
    # Keras' ResNet50 names (read as a ResNet): a conv, its batch norm's four vectors, a block conv
    import h5py
    res = [("conv1_conv", [rng.standard_normal((7, 7, 3, 4)).astype(np.float32), np.zeros(4, np.float32)]), ("conv1_bn", []),
           ("conv2_block1_1_conv", [rng.standard_normal((1, 1, 4, 4)).astype(np.float32), np.zeros(4, np.float32)]),
           ("avg_pool", []), ("predictions", [rng.standard_normal((4, 2)).astype(np.float32), np.zeros(2, np.float32)])]
    path = os.path.join(d, "resnet.h5")
    W.write_keras_h5(path, res)
    with h5py.File(path, "a") as f:
        names = [("conv1_bn/%s:0" % w).encode() for w in ("gamma", "beta", "moving_mean", "moving_variance")]
        f["conv1_bn"].attrs["weight_names"] = names
        for nm in names:
            f["conv1_bn"].create_dataset(nm.decode(), data=np.ones(4, np.float32))
    # Keras' EfficientNetB0 names (read as one): its Normalization layer (mean, variance and an
    # int64 scalar count), a rescaling after it, the stem conv and its batch norm, a depthwise conv
    eff = [("rescaling", []), ("normalization", [np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)]),
           ("rescaling_1", []), ("stem_conv", [rng.standard_normal((3, 3, 3, 4)).astype(np.float32)]), ("stem_bn", []),
           ("block1a_dwconv", [rng.standard_normal((3, 3, 4, 1)).astype(np.float32)]), ("avg_pool", [])]
    path = os.path.join(d, "efficientnet.h5")
    W.write_keras_h5(path, eff)
    with h5py.File(path, "a") as f:
        g = f["normalization"]
        for k in list(g.keys()):
            del g[k]
        names = [("normalization/%s:0" % w).encode() for w in ("mean", "variance", "count")]
        g.attrs["weight_names"] = names
        g.create_dataset(names[0].decode(), data=eff[1][1][0])
        g.create_dataset(names[1].decode(), data=eff[1][1][1])
        g.create_dataset(names[2].decode(), data=np.int64(300))
        names = [("stem_bn/%s:0" % w).encode() for w in ("gamma", "beta", "moving_mean", "moving_variance")]
        f["stem_bn"].attrs["weight_names"] = names
        for nm in names:
            f["stem_bn"].create_dataset(nm.decode(), data=np.ones(4, np.float32))
    # a user's model with Keras' MobileNetV2 nested as one layer: its inner layers' weights in one
    # group, the moving statistics last; then global pooling and a one-unit Dense
    path = os.path.join(d, "nested_mobile.h5")
    with h5py.File(path, "w") as f:
        W.save_attributes_to_hdf5_group(f, "layer_names", [b"mobilenetv2_1.00_224", b"global_average_pooling2d", b"dense"])
        g = f.create_group("mobilenetv2_1.00_224")
        inner = [("Conv1/kernel:0", rng.standard_normal((3, 3, 3, 4)).astype(np.float32))]
        inner += [("bn_Conv1/%s:0" % w, np.ones(4, np.float32)) for w in ("gamma", "beta")]
        inner += [("expanded_conv_depthwise/depthwise_kernel:0", rng.standard_normal((3, 3, 4, 1)).astype(np.float32))]
        inner += [("bn_Conv1/%s:0" % w, np.ones(4, np.float32)) for w in ("moving_mean", "moving_variance")]
        W.save_attributes_to_hdf5_group(g, "weight_names", [n.encode() for n, _ in inner])
        for n, v in inner:
            g.create_dataset(n, data=v)
        f.create_group("global_average_pooling2d").attrs["weight_names"] = np.zeros(0)
        g = f.create_group("dense")
        W.save_attributes_to_hdf5_group(g, "weight_names", [b"dense/kernel:0", b"dense/bias:0"])
        g.create_dataset("dense/kernel:0", data=rng.standard_normal((4, 1)).astype(np.float32))
        g.create_dataset("dense/bias:0", data=np.zeros(1, np.float32))


def onnx_seeds(d):
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except Exception as e:  # noqa: BLE001
        print("no ONNX seeds (%s)" % e)
        return
    rng = np.random.default_rng(2)

    def model(float_data=False, matmul=False):
        inits = {"conv.w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv.b": np.zeros(4, np.float32),
                 "fc.w": rng.standard_normal((2, 64)).astype(np.float32), "fc.b": np.zeros(2, np.float32)}
        tensors = []
        for k, v in inits.items():
            if matmul and k == "fc.w":
                v = v.T.copy()
            t = numpy_helper.from_array(v, k)
            if float_data:
                t = helper.make_tensor(k, TensorProto.FLOAT, v.shape, v.flatten().tolist())
            tensors.append(t)
        nodes = [helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
                 helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("MaxPool", ["r"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
                 helper.make_node("Flatten", ["m"], ["f"], axis=1)]
        if matmul:
            nodes += [helper.make_node("MatMul", ["f", "fc.w"], ["g"]), helper.make_node("Add", ["g", "fc.b"], ["y"])]
        else:
            nodes.append(helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1))
        g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], tensors)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])

    onnx.save(model(), os.path.join(d, "tiny.onnx"))
    onnx.save(model(float_data=True), os.path.join(d, "float_data.onnx"))
    onnx.save(model(matmul=True), os.path.join(d, "matmul.onnx"))

    # a residual graph (read as a ResNet): stem, one basic block with BatchNormalization, head
    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    inits = {"stem.w": w(4, 3, 7, 7), "a.w": w(4, 4, 3, 3), "b.w": w(4, 4, 3, 3), "fc.w": w(2, 4), "fc.b": w(2)}
    for k in ("bn.s", "bn.b", "bn.m"):
        inits[k] = w(4)
    inits["bn.v"] = np.abs(w(4)) + 0.5
    nodes = [helper.make_node("Conv", ["x", "stem.w"], ["s"], pads=[3, 3, 3, 3], kernel_shape=[7, 7], strides=[2, 2]),
             helper.make_node("Relu", ["s"], ["sr"]),
             helper.make_node("MaxPool", ["sr"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["p", "a.w"], ["a"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["a", "bn.s", "bn.b", "bn.m", "bn.v"], ["an"], epsilon=1e-3),
             helper.make_node("Relu", ["an"], ["ar"]),
             helper.make_node("Conv", ["ar", "b.w"], ["b"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Add", ["b", "p"], ["sum"]),
             helper.make_node("Relu", ["sum"], ["o"]),
             helper.make_node("GlobalAveragePool", ["o"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "residual", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), os.path.join(d, "residual.onnx"))


def weights_seeds(d):
    onnx_seeds(d)
    rng = np.random.default_rng(3)
    st.write(os.path.join(d, "torchvision.safetensors"),
             {"features.0.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "features.0.bias": np.zeros(4, np.float32),
              "classifier.0.weight": rng.standard_normal((8, 16)).astype(np.float32),
              "classifier.0.bias": np.zeros(8, np.float32)})
    st.write(os.path.join(d, "timm.safetensors"),
             {"pre_logits.fc1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
              "head.fc.weight": np.ones((2, 4), np.float32)})


def diag_seed(path, run_json, history, preds):
    with open(path, "wb") as f:
        f.write(run_json + SEP + history + SEP + preds)


def diag_seeds(d):
    rj = json.dumps({"loupe_version": "0.1.0", "classes": ["cat", "dog", "eel"],
                     "config": {"model": "vgg16", "preprocess": "rescale", "weights": None, "lr": 0.01, "batch": 4,
                                "epochs": 3, "monitor": "val_loss", "early_stop": 2},
                     "counts": {"train": {"cat": 5, "dog": 5, "eel": 5}, "valid": {"cat": 1, "dog": 1, "eel": 1}}}).encode()
    hist = (b"epoch,loss,accuracy,val_loss,val_accuracy,lr\n1,1.1,0.3,1.0,0.33,0.01\n"
            b"2,0.9,0.5,1.2,0.66,0.01\n3,0.5,0.8,1.5,0.33,0.005\n")
    preds = b"epoch,path,label,p0,p1,p2\n"
    rng = np.random.default_rng(4)
    for e in (1, 2, 3):
        for i, lab in enumerate((0, 1, 2)):
            p = rng.dirichlet([1, 1, 1])
            name = '"valid/x,%d.png"' % i if i == 1 else "valid/c%d/%d.png" % (lab, i)
            preds += ("%d,%s,%d,%.6f,%.6f,%.6f\n" % (e, name, lab, *p)).encode()
    diag_seed(os.path.join(d, "three_classes"), rj, hist, preds)
    diag_seed(os.path.join(d, "torn"), rj, hist + b"4,0.4,0.9", preds + b"3,valid/x.png,1,0.2")
    diag_seed(os.path.join(d, "nan"), b"", hist.replace(b"1.5,", b"nan,"), preds.replace(b"0.", b"nan", 1))
    with open(os.path.join(d, "no_run_json"), "wb") as f:
        f.write(SEP + hist + SEP + preds)


def loupe_seeds(out, loupe):
    work = tempfile.mkdtemp(prefix="loupe-seeds-")
    try:
        make_data.make(os.path.join(work, "data"), per_class=(4, 2, 0))
        run = os.path.join(work, "run")
        # relative paths (run.json records them): the same seeds every time, for FUZZ_SEED runs
        r = subprocess.run([os.path.abspath(loupe), "train", "data", "--run", "run", "--model", "tiny", "--top", "none",
                            "--size", "32x32", "--batch", "4", "--epochs", "2", "--threads", "1", "--quiet",
                            "--tensorboard", "off"], cwd=work, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            print("loupe train for seeds failed: %s" % r.stderr.strip())
            return
        shutil.copy(os.path.join(run, "checkpoints", "last.safetensors"), os.path.join(out, "safetensors", "loupe_last"))
        shutil.copy(os.path.join(run, "checkpoints", "best.safetensors"), os.path.join(out, "weights", "loupe_best"))
        parts = [open(os.path.join(run, n), "rb").read() for n in ("run.json", "history.csv", "valid_predictions.csv")]
        diag_seed(os.path.join(out, "diag_run", "loupe_run"), *parts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def make_all(out, loupe=None):
    for name, fn in (("decode", decode_seeds), ("safetensors", safetensors_seeds), ("weights", weights_seeds),
                     ("h5", keras_h5_seeds), ("diag_run", diag_seeds)):
        fn(fresh(os.path.join(out, name)))
    if loupe and os.path.exists(loupe):
        loupe_seeds(out, loupe)
    return {t: sorted(os.listdir(os.path.join(out, t))) for t in ("decode", "safetensors", "weights", "h5", "diag_run")}


if __name__ == "__main__":
    got = make_all(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
    for t, files in got.items():
        print("%s: %d seeds" % (t, len(files)))
