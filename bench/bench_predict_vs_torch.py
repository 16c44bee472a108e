#!/usr/bin/python3
"""Inference of a folder of JPEG images: `loupe predict CKPT DIR` against PyTorch 1.13's eval
(the same torchvision model and weights, PIL decode + resize + normalise, batches of 16 under
torch.no_grad(), fp32 and fp32 channels_last), each timed end to end (model load, decoding,
forward) on the same threads, alternating, best of --repeat.
usage: bench/bench_predict_vs_torch.py [--model mobilenet_v2|efficientnet_b0|resnet50|resnet18]
       [--images 256] [--size 224] [--repeat 2] [--loupe build/loupe]"""
import argparse, os, shutil, subprocess, sys, tempfile, time
import numpy as np
import torch, torchvision
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import safetensors_io as st  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--model", default="mobilenet_v2")
ap.add_argument("--images", type=int, default=256)
ap.add_argument("--size", type=int, default=224)
ap.add_argument("--repeat", type=int, default=2)
ap.add_argument("--loupe", default="build/loupe")
ap.add_argument("--threads", type=int, default=os.cpu_count())
a = ap.parse_args()
torch.set_num_threads(a.threads)
tmp = tempfile.mkdtemp()
imgdir = os.path.join(tmp, "images")
os.makedirs(imgdir)
rng = np.random.default_rng(0)
paths = []
for i in range(a.images):  # photos-like: smooth gradients plus noise, 320x240, JPEG quality 90
    yy, xx = np.mgrid[0:240, 0:320]
    img = (np.stack([xx * 0.6 + 30 * i % 97, yy * 0.8, (xx + yy) * 0.3], -1) + rng.normal(0, 20, (240, 320, 3))) % 256
    paths.append(os.path.join(imgdir, "img%04d.jpg" % i))
    Image.fromarray(img.astype(np.uint8)).save(paths[-1], quality=90)
model = getattr(torchvision.models, a.model)(num_classes=2).eval()
sd = os.path.join(tmp, "model.safetensors")
st.write(sd, {k: v.numpy() for k, v in model.state_dict().items()}, {})
ck = os.path.join(tmp, "ck.safetensors")
subprocess.run([a.loupe, "convert", sd, ck, "--size", str(a.size)], check=True, capture_output=True)
mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def run_loupe():
    t0 = time.time()
    r = subprocess.run([a.loupe, "predict", ck, imgdir, "--json", "--threads", str(a.threads)], capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    n = len(r.stdout.strip().split("\n"))
    return n / (time.time() - t0)


def run_torch(channels_last):
    t0 = time.time()
    m = getattr(torchvision.models, a.model)(num_classes=2).eval()
    m.load_state_dict(model.state_dict())
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    n = 0
    with torch.no_grad():
        for b in range(0, len(paths), 16):
            xs = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((a.size, a.size), Image.BILINEAR),
                                              np.float32) / 255.0).permute(2, 0, 1) for p in paths[b:b + 16]]
            x = (torch.stack(xs) - mean) / std
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            m(x).softmax(1)
            n += len(xs)
    return n / (time.time() - t0)


best = {"loupe": 0.0, "torch": 0.0, "torch_cl": 0.0}
for _ in range(a.repeat):
    best["loupe"] = max(best["loupe"], run_loupe())
    best["torch"] = max(best["torch"], run_torch(False))
    best["torch_cl"] = max(best["torch_cl"], run_torch(True))
cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
print("predict %d JPEGs (320x240 -> %d), %s, %d thread(s), %s, ONEDNN_MAX_CPU_ISA=%s" % (
    a.images, a.size, a.model, a.threads, cpu, os.environ.get("ONEDNN_MAX_CPU_ISA", "native")))
print("loupe predict:                %7.1f images/s" % best["loupe"])
print("PyTorch eval fp32:            %7.1f images/s  (loupe %.2fx)" % (best["torch"], best["loupe"] / best["torch"]))
print("PyTorch eval channels_last:   %7.1f images/s  (loupe %.2fx)" % (best["torch_cl"], best["loupe"] / best["torch_cl"]))
shutil.rmtree(tmp)
