"""Sequential digits: scikit-learn's 8×8 handwritten digits, upsampled and read pixel by pixel.

Each of the 1797 images of ``sklearn.datasets.load_digits`` (intensities 0..16, bundled with
scikit-learn, no download) is scaled to [0, 1], upsampled bilinearly to ``side``×``side``
(``scipy.ndimage.zoom``, order 1) and flattened row by row into a sequence of side² steps with
one feature per step (like sequential MNIST):

    x[n, r·side + c, 0] = zoom(image_n / 16)[r, c]          (N, side², 1) float32
    y[n] = digit                                             (N,) int64, 10 classes

The eval split is a seeded permutation's first ``eval_count`` images; the rest is training data.

    python examples/data_digits.py --out examples/data/digits_eval.npz
"""

from __future__ import annotations

import numpy as np
from sequence_set import SequenceSet, write_eval_set

SIDE = 32
EVAL_COUNT = 360
SEED = 0


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits: images (1797, 8, 8) float in [0, 1] and labels (1797,) int64."""
    from sklearn.datasets import load_digits  # only needed to regenerate the data

    digits = load_digits()
    return digits.images / 16.0, digits.target.astype(np.int64)


def to_sequences(images: np.ndarray, side: int = SIDE) -> np.ndarray:
    """Images (N, 8, 8) → pixel sequences (N, side², 1) float32, bilinear upsampling."""
    from scipy.ndimage import zoom

    factor = side / images.shape[-1]
    big = np.stack([zoom(image, factor, order=1) for image in images])  # (N, side, side)
    return np.clip(big, 0.0, 1.0).reshape(len(images), side * side, 1).astype(np.float32)


def digit_splits(
    seed: int = SEED, side: int = SIDE, eval_count: int = EVAL_COUNT
) -> tuple[SequenceSet, SequenceSet]:
    """(train, eval) pixel-sequence sets; the same seed always gives the same split."""
    images, labels = digit_images()
    order = np.random.default_rng(seed).permutation(len(labels))
    data = SequenceSet(to_sequences(images, side), labels)
    return data.subset(order[eval_count:]), data.subset(order[:eval_count])


def eval_set(count: int = EVAL_COUNT, seed: int = SEED) -> SequenceSet:
    """The held-out images of the split (``count`` of them)."""
    return digit_splits(seed, SIDE, count)[1]


if __name__ == "__main__":
    write_eval_set(eval_set, "digits", EVAL_COUNT, SEED)
