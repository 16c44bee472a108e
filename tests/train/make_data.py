"""A small two-class image dataset for end-to-end tests, written with PIL."""
import os
import numpy as np
from PIL import Image

def make(root, per_class=(12, 4, 4), size=32, seed=0, classes=("negative", "positive"), jpeg=True, mislabel_valid=0):
    """mislabel_valid: that many valid/<class 0> images are drawn with class 1's pattern."""
    rng = np.random.default_rng(seed)
    for split, n in zip(("train", "valid", "test"), per_class):
        for c, name in enumerate(classes):
            if n == 0:
                continue
            d = os.path.join(root, split, name)
            os.makedirs(d, exist_ok=True)
            for i in range(n):
                img = rng.normal(110, 40, size=(size, size, 3))
                pattern = c
                if split == "valid" and c == 0 and i < mislabel_valid:
                    pattern = 1
                if pattern == 0:
                    img[::4, :, :] += 80   # horizontal stripes
                else:
                    img[:, ::4, :] += 80   # vertical stripes
                    img[..., 0] += 30
                img = np.clip(img, 0, 255).astype(np.uint8)
                path = os.path.join(d, f"{name}_{i:03d}.png")
                if jpeg and i == 1 and split == "train":
                    path = path[:-4] + ".jpg"
                    Image.fromarray(img).save(path, quality=95)
                else:
                    Image.fromarray(img).save(path)
    return root
