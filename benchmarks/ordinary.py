"""Ordinary images: unmasked real slices, default settings.

Real scans carry zero padding, empty backgrounds and saturated regions: flat
regions that EM models as one more component of almost no variance. Each case
fits ``DeepGaussianMixture(K, random_state=0)`` with its defaults and no mask,
and scikit-learn's ``GaussianMixture(K, random_state=0)`` on the same pixels
in the same run, and reports what a user meets first:

- ``min label %``: the smallest share of the pixels that a component labels
  (an empty component is a collapsed model);
- ``|w - labels|``: the largest difference between ``weights_`` and the
  share of the pixels each component labels;
- ``score - GMM``: ``score(X)`` of the deep model minus GaussianMixture's
  (mean log-likelihood per pixel, nats);
- ``n_iter_`` and whether training converged within ``max_iter``;
- Dice (matched per slice) where labels exist, beside GaussianMixture's and
  GaussianMixture's with smoothed posteriors (σ=2);
- ``--bic``: the K in 1..5 of lowest BIC on the same pixels, deep and EM.

Usage::

    python benchmarks/ordinary.py [--cases ...] [--bic]
                                  [--output benchmarks/results/ordinary]

Prints a markdown table and writes it with a JSON file next to ``--output``.
"""

import argparse
import json
import time
import warnings
from pathlib import Path

import datasets
import numpy as np
from scipy import ndimage
from skimage.transform import resize
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture
from skdgmm.metrics import dice_score, match_labels


def _emidec(n_slices, size):
    data = np.load(datasets.DATA / "emidec" / "emidec_lge256_subset.npz")
    # slices of different patients, evenly spread over the set
    index = np.arange(0, 40 * n_slices, 40)
    images = data["images"][index] / 255.0
    if size != images.shape[1]:
        images = np.stack([resize(image, (size, size)) for image in images])
    return images, None, None


def _mni152(index):
    benchmark = datasets.load_mni152()
    # background (0), CSF, grey and white matter
    return benchmark.images[index], benchmark.labels[index], [0, 1, 2, 3]


def _myops(index):
    benchmark = datasets.load_myops()
    return benchmark.images[index], None, None


def _nuclei(index):
    benchmark = datasets.load_nuclei()
    return benchmark.images[index], benchmark.labels[index], [0, 1]


# name: (loader, K); each case is fitted once, on all its images together
CASES = {
    "EMIDEC 1 slice 128²": (lambda: _emidec(1, 128), 2),
    "EMIDEC 2 slices 128²": (lambda: _emidec(2, 128), 3),
    "EMIDEC 4 slices 128²": (lambda: _emidec(4, 128), 4),
    **{f"EMIDEC slice {i} 256²": (lambda i=i: _emidec_slice(i), 3) for i in (0, 1)},
    **{f"MNI152 slice {i}": (lambda i=i: _mni152([i]), 4) for i in (0, 8)},
    "MyoPS slice 0 (3 channels)": (lambda: _myops([0]), 4),
    "DSB image 0": (lambda: _nuclei([0]), 2),
}


def _emidec_slice(i):
    data = np.load(datasets.DATA / "emidec" / "emidec_lge256_subset.npz")
    return data["images"][[60 * i + 10]] / 255.0, None, None


def _label_fractions(labels, k):
    return np.bincount(labels.ravel(), minlength=k) / labels.size


def _dice(truth, labels, classes):
    """Mean Dice over images and classes, clusters matched per image."""
    scores = []
    for t, lab in zip(truth, labels):
        matched = match_labels(t.ravel(), lab.ravel(), classes, list(range(len(classes))))
        scores.append(np.nan_to_num(dice_score(t.ravel(), matched, classes), nan=1.0))
    return float(np.mean(scores))


def _smoothed_labels(gm, images):
    resp = gm.predict_proba(images.reshape(-1, _features(images)))
    resp = resp.reshape(images.shape[:3] + (-1,))
    resp = ndimage.gaussian_filter(resp, sigma=(0, 2, 2, 0))
    return resp.argmax(-1)


def _features(images):
    return 1 if images.ndim == 3 else images.shape[-1]


def run_case(name, images, truth, classes, k, bic):
    pixels = images.reshape(-1, _features(images))
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deep = DeepGaussianMixture(k, random_state=0).fit(images)
    deep_seconds = time.perf_counter() - start
    start = time.perf_counter()
    gm = GaussianMixture(k, random_state=0).fit(pixels)
    gm_seconds = time.perf_counter() - start
    labels = deep.predict(images)
    fractions = _label_fractions(labels, k)
    row = {
        "case": name,
        "K": k,
        "min label %": 100 * float(fractions.min()),
        "|w - labels|": float(np.abs(deep.weights_ - fractions).max()),
        "score": deep.score(images),
        "GMM score": gm.score(pixels),
        "n_iter_": deep.n_iter_,
        "converged": bool(deep.converged_),
        "warnings": sorted({w.category.__name__ for w in caught}),
        "seconds": deep_seconds,
        "GMM seconds": gm_seconds,
    }
    row["score - GMM"] = row["score"] - row["GMM score"]
    if truth is not None:
        row["Dice"] = _dice(truth, labels, classes)
        gm_labels = gm.predict(pixels).reshape(labels.shape)
        row["GMM Dice"] = _dice(truth, gm_labels, classes)
        row["GMM+smooth Dice"] = _dice(truth, _smoothed_labels(gm, images), classes)
    if bic:
        row["BIC K"], row["GMM BIC K"] = best_k_by_bic(images)
    return row


def best_k_by_bic(images, ks=range(1, 6)):
    pixels = images.reshape(-1, _features(images))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        deep = [DeepGaussianMixture(k, random_state=0).fit(images).bic(images) for k in ks]
        em = [GaussianMixture(k, random_state=0).fit(pixels).bic(pixels) for k in ks]
    return int(ks[np.argmin(deep)]), int(ks[np.argmin(em)])


COLUMNS = [
    "case", "K", "min label %", "|w - labels|", "score - GMM", "n_iter_",
    "converged", "Dice", "GMM Dice", "GMM+smooth Dice", "BIC K", "GMM BIC K",
    "seconds", "GMM seconds",
]  # fmt: skip


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return "—" if value is None else str(value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES))
    parser.add_argument("--bic", action="store_true", help="K of lowest BIC, 1..5")
    parser.add_argument("--output", default="benchmarks/results/ordinary")
    args = parser.parse_args()
    if not datasets.available():
        print(f"skipped: no data in {datasets.DATA}")
        return
    warnings.simplefilter("ignore", ConvergenceWarning)
    rows = []
    for name in args.cases:
        load, k = CASES[name]
        images, truth, classes = load()
        rows.append(run_case(name, images, truth, classes, k, args.bic))
        print(name, "done", flush=True)
    columns = [c for c in COLUMNS if any(c in row for row in rows)]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows),
    ]
    table = "\n".join(lines)
    print(table)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".md").write_text(table + "\n")
    output.with_suffix(".json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
