"""data_augment: the augmentation transform follows Keras' ImageDataGenerator.
The reference below is transcribed from keras_preprocessing
(affine_transformations.apply_affine_transform: rotation @ shift @ zoom about the
centre (h/2 + 0.5, w/2 + 0.5), then scipy.ndimage.affine_transform with order=1,
mode='nearest', per channel; then flips; brightness is loupe's documented
multiply-and-clip). scipy is not installed, so its order-1 'nearest' sampling is
written out in numpy (bilinear, indices clamped to the edge). Tolerance 1e-3."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from fixtures import Checker, fresh_dir, noise_image, run_tool  # noqa: E402

tool, cli, tmp = sys.argv[1], sys.argv[2], fresh_dir(sys.argv[3])
C = Checker("data_augment")


def transform_matrix_offset_center(matrix, x, y):
    o_x = float(x) / 2 + 0.5
    o_y = float(y) / 2 + 0.5
    offset_matrix = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset_matrix = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    return np.dot(np.dot(offset_matrix, matrix), reset_matrix)


def ndimage_affine_order1_nearest(img, matrix, offset):
    h, w = img.shape
    r, c = np.mgrid[0:h, 0:w].astype(np.float64)
    ir = matrix[0, 0] * r + matrix[0, 1] * c + offset[0]
    ic = matrix[1, 0] * r + matrix[1, 1] * c + offset[1]
    r0, c0 = np.floor(ir), np.floor(ic)
    wr, wc = ir - r0, ic - c0
    r0, c0 = r0.astype(int), c0.astype(int)
    R0, R1 = np.clip(r0, 0, h - 1), np.clip(r0 + 1, 0, h - 1)
    C0, C1 = np.clip(c0, 0, w - 1), np.clip(c0 + 1, 0, w - 1)
    return ((1 - wr) * ((1 - wc) * img[R0, C0] + wc * img[R0, C1]) + wr * ((1 - wc) * img[R1, C0] + wc * img[R1, C1]))


def keras_apply(x, theta, tx, ty, zx, zy, hflip, vflip, brightness):
    transform_matrix = None
    if theta != 0:
        t = np.deg2rad(theta)
        transform_matrix = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    if tx != 0 or ty != 0:
        shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
        transform_matrix = shift if transform_matrix is None else np.dot(transform_matrix, shift)
    if zx != 1 or zy != 1:
        zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
        transform_matrix = zoom if transform_matrix is None else np.dot(transform_matrix, zoom)
    if transform_matrix is not None:
        h, w = x.shape[0], x.shape[1]
        m = transform_matrix_offset_center(transform_matrix, h, w)
        x = np.stack([ndimage_affine_order1_nearest(x[:, :, k], m[:2, :2], m[:2, 2]) for k in range(x.shape[2])], -1)
    if hflip:
        x = x[:, ::-1]
    if vflip:
        x = x[::-1]
    if brightness != 1:
        x = np.clip(x * brightness, 0, 255)
    return x


src = os.path.join(tmp, "src.png")
noise_image(45, 31, 3).save(src)
x = np.array(noise_image(45, 31, 3)).astype(np.float64)
cases = [(0, 0, 0, 1, 1, 0, 0, 1), (30, 0, 0, 1, 1, 0, 0, 1), (-75, 0, 0, 1, 1, 0, 0, 1), (0, 5.5, 0, 1, 1, 0, 0, 1),
         (0, 0, -7.25, 1, 1, 0, 0, 1), (0, 0, 0, 0.8, 1.15, 0, 0, 1), (0, 0, 0, 1, 1, 1, 0, 1), (0, 0, 0, 1, 1, 0, 1, 1),
         (17, -3, 4, 1.2, 0.9, 1, 1, 1.3), (-40, 8, -2, 0.75, 0.75, 0, 1, 0.6), (0, 0, 0, 1, 1, 0, 0, 1.5)]
for i, cs in enumerate(cases):
    out = os.path.join(tmp, f"a{i}.f32")
    res = run_tool(tool, "augment", src, out, *[str(v) for v in cs])
    got = np.fromfile(out, np.float32).reshape(31, 45, 3)
    want = keras_apply(x, *cs)
    d = float(np.abs(got - want).max())
    C.check(d < 1e-3, f"case {cs}: max |loupe - keras reference| = {d}")
C.done()
