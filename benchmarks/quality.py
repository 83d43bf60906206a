"""Segmentation quality on real images: the protocol of DESIGN §5.

For each data set (MyoPS, EMIDEC, MNI152, DSB nuclei in ``../shared/data``)
and each method, every slice is segmented without labels, clusters are
matched to the true classes by the Hungarian algorithm on Dice (inside the
mask), and the per-class Dice is averaged over slices. All methods run on the
same pixels in the same run. A class absent from both the truth and the
prediction of a slice scores 1.

Methods
-------
GaussianMixture        sklearn EM per slice (through PixelwiseMixture)
GaussianMixture+smooth the same, posteriors smoothed (Gaussian, 2 px) first
Otsu                   multi-Otsu thresholds (single-channel data)
SVGMM (EM)             EM for the spatially variant mixture, per slice
deepG / deepSVG        DeepGaussianMixture with default settings, per slice
deepG / deepSVG amortized
                       one network trained on the other half of the
                       patients, applied in one forward pass (2-fold,
                       patient-wise)
deepG amortized, fine-tuned 10 steps
                       the same network, copied and trained 10 more steps on
                       each slice alone before labelling it
                       (adapt_iter=10, adapt_method="network")
deepG on the collection
                       one network fitted on all the slices, which it
                       labels (unsupervised: no labels are used)

Usage::

    python benchmarks/quality.py [--quick] [--datasets myops emidec ...]
                                 [--methods ...] [--prior] [--collection]
                                 [--params JSON]
                                 [--output benchmarks/results/quality]

``--prior`` adds the paper's setting on MyoPS: ``means_init`` from three
labelled slices (one per patient), Dice without label matching, per slice
and with one model fitted on all the slices (the paper's multi-image setting).
``--collection`` runs the collection protocol (a study, DESIGN §5) instead of
the per-image table, on every data set: one DeepGaussianMixture fitted on all
the slices of the set, which it labels, beside per-slice GaussianMixture
(plain and smoothed) on the same pixels, each method timed in its own block.
Three metrics: with ``means_init`` from at most 3 labelled slices (the first
slice of each of the first patients; fewer when the set has no more than 3
patients) given to every method, Dice on the other slices without matching;
without a prior, Dice after one label-to-class matching for the whole
collection (per-slice EM's components ordered by the mean intensity of their
pixels first: channel LGE on MyoPS, the first channel elsewhere); and
per-slice matched Dice. Times, ``n_iter_`` and convergence are given for the
runs with and without the prior. Written to ``<output>_collection.md/.json``.

``--params`` overrides settings of every DeepGaussianMixture, for studies
(also those a method sets itself); the JSON rows record the overrides.

Prints a markdown table and writes it with a JSON file next to ``--output``.
"""

import argparse
import json
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import datasets
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_multiotsu
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture, PixelwiseMixture
from skdgmm.metrics import dice_score, match_labels
from skdgmm.svgmm import SpatiallyVariantGaussianMixture


def slice_dice(benchmark, i, labels, matched=True):
    """Dice of the scored classes on slice ``i`` (clusters matched or not)."""
    mask, truth = benchmark.masks[i], benchmark.labels[i]
    clusters = list(range(benchmark.n_components))
    if matched:
        labels = match_labels(truth[mask], labels[mask], benchmark.classes, clusters)
    else:
        labels = np.asarray(benchmark.classes)[labels[mask]]
    return np.nan_to_num(dice_score(truth[mask], labels, benchmark.scored), nan=1.0)


# Settings that override the defaults of every DeepGaussianMixture (--params)
OVERRIDES = {}
# (n_iter_, converged_) of the deep models fitted by the method being run
FITS = []


def _deep(**params):
    return DeepGaussianMixture(**{"random_state": 0, **params, **OVERRIDES})


def _fitted(model):
    FITS.append((int(model.n_iter_), bool(model.converged_)))
    return model


def per_slice(make_labels):
    """A method segmenting each slice on its own."""

    def run(benchmark):
        labels = np.empty(benchmark.masks.shape, int)
        for i in range(len(benchmark.images)):
            labels[i] = make_labels(
                benchmark, benchmark.images[i : i + 1], benchmark.masks[i : i + 1]
            )[0]
        return labels

    return run


def _gmm(benchmark, **params):
    return PixelwiseMixture(
        GaussianMixture(benchmark.n_components, random_state=0, **params)
    )


def gmm(benchmark, X, mask, **params):
    return _gmm(benchmark, **params).fit_predict(X, mask=mask)


def gmm_smoothed(benchmark, X, mask, **params):
    model = _gmm(benchmark, **params)
    proba = model.fit(X, mask=mask).predict_proba(X, mask=mask)
    proba = ndimage.gaussian_filter(proba, sigma=(0, 2, 2, 0))
    return np.where(mask, proba.argmax(-1), -1)


def otsu(benchmark, X, mask):
    thresholds = threshold_multiotsu(X[mask], classes=benchmark.n_components)
    return np.where(mask, np.digitize(X, thresholds), -1)


def svgmm(benchmark, X, mask):
    model = SpatiallyVariantGaussianMixture(benchmark.n_components, random_state=0)
    return model.fit_predict(X, mask=mask)


def deep(spatially_variant):
    def segment(benchmark, X, mask):
        model = _deep(
            n_components=benchmark.n_components, spatially_variant=spatially_variant
        )
        labels = model.fit_predict(X, mask=mask)
        _fitted(model)
        return labels

    return segment


def patient_folds(benchmark):
    """Two folds of slices, split by patient: (first half, second half)."""
    patients = np.unique(benchmark.groups)
    first = np.isin(benchmark.groups, patients[: len(patients) // 2])
    return first, ~first


def amortized(spatially_variant, fine_tune=0):
    """Train on half of the patients, label the other half in one pass or,
    with ``fine_tune``, each slice by a copy of the network trained that many
    more steps on the slice alone (``adapt_method="network"``; the model
    does not change)."""

    def run(benchmark):
        labels = np.empty(benchmark.masks.shape, int)
        for test in patient_folds(benchmark):
            model = _deep(
                n_components=benchmark.n_components, spatially_variant=spatially_variant
            )
            _fitted(model.fit(benchmark.images[~test], mask=benchmark.masks[~test]))
            model.set_params(adapt_iter=fine_tune, adapt_method="network")
            labels[test] = model.predict(
                benchmark.images[test], mask=benchmark.masks[test]
            )
        return labels

    return run


def fit_collection(benchmark, **params):
    """One network fitted on all the slices at once: (their labels, model)."""
    model = _deep(n_components=benchmark.n_components, **params)
    labels = model.fit_predict(benchmark.images, mask=benchmark.masks)
    return labels, _fitted(model)


def collection(spatially_variant):
    """One network fitted on all the slices at once, which it labels."""

    def run(benchmark):
        return fit_collection(benchmark, spatially_variant=spatially_variant)[0]

    return run


METHODS = {
    "GaussianMixture": per_slice(gmm),
    "GaussianMixture+smooth": per_slice(gmm_smoothed),
    "Otsu": per_slice(otsu),
    "SVGMM (EM)": per_slice(svgmm),
    "deepG": per_slice(deep(False)),
    "deepSVG": per_slice(deep(True)),
    "deepG amortized": amortized(False),
    "deepG amortized, fine-tuned 10 steps": amortized(False, fine_tune=10),
    "deepSVG amortized": amortized(True),
    "deepG on the collection": collection(False),
}


def timed(run, benchmark):
    """What ``run(benchmark)`` returns and the seconds it took."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = run(benchmark)
    return result, time.perf_counter() - start


def evaluate(benchmark, methods):
    rows = []
    for name in methods:
        if name == "Otsu" and benchmark.images.ndim == 4:
            continue  # thresholds need a single channel
        if "amortized" in name and len(np.unique(benchmark.groups)) < 2:
            continue
        FITS.clear()
        labels, seconds = timed(METHODS[name], benchmark)
        seconds /= len(benchmark.images)
        dice = [slice_dice(benchmark, i, labels[i]) for i in range(len(labels))]
        rows.append(
            _result(benchmark.name, name, benchmark.scored, dice, seconds, FITS)
        )
    return rows


def class_means(benchmark, index):
    """Mean of each class over the masked pixels of the slices ``index``."""
    images, labels = benchmark.images[index], benchmark.labels[index]
    inside = benchmark.masks[index]
    return np.array(
        [images[inside & (labels == c)].mean(0) for c in benchmark.classes]
    ).reshape(benchmark.n_components, -1)


def labelled_slices(benchmark, n_labelled):
    """The first slice of each of the first ``n_labelled`` patients."""
    first = [
        np.flatnonzero(benchmark.groups == g)[0] for g in np.unique(benchmark.groups)
    ]
    return first[:n_labelled]


def rest_of(benchmark, labelled):
    """The slices that are not ``labelled``."""
    return benchmark.subset(np.setdiff1d(np.arange(len(benchmark.images)), labelled))


PRIOR_METHODS = {
    "GaussianMixture": lambda K, means: PixelwiseMixture(
        GaussianMixture(K, means_init=means, random_state=0)
    ),
    "deepG": lambda K, means: _deep(n_components=K, means_init=means),
    "deepG, λ=1": lambda K, means: _deep(
        n_components=K, means_init=means, mean_regularization=1.0
    ),
    "deepG, λ=10": lambda K, means: _deep(
        n_components=K, means_init=means, mean_regularization=10.0
    ),
    "deepG, Gaussians free, λ=1": lambda K, means: _deep(
        n_components=K, means_init=means, gaussians="free", mean_regularization=1.0
    ),
    "deepSVG, Gaussians free, λ=1": lambda K, means: _deep(
        n_components=K,
        means_init=means,
        gaussians="free",
        mean_regularization=1.0,
        spatially_variant=True,
    ),
}


# The paper's multi-image setting: one network fitted on all the unlabelled
# slices at once (the mean regularization acts on the mean over images).
PRIOR_COLLECTION_METHODS = {
    f"deepG on the collection, λ={strength:g}": (
        lambda K, means, strength=strength: _deep(
            n_components=K, means_init=means, mean_regularization=strength
        )
    )
    for strength in (0.0, 1.0, 10.0)
}


def evaluate_with_prior(benchmark, n_labelled=3):
    """The paper's setting: ``means_init`` from a few labelled slices.

    The first slice of each of the first ``n_labelled`` patients gives the
    class means; every other slice is segmented, on its own or (collection
    methods) by one model fitted on all of them, and scored without
    matching (component k is class k).
    """
    labelled = labelled_slices(benchmark, n_labelled)
    means = class_means(benchmark, labelled)
    rest = rest_of(benchmark, labelled)
    runs = {
        name: per_slice(
            lambda b, X, mask, make=make: make(b.n_components, means).fit_predict(
                X, mask=mask
            )
        )
        for name, make in PRIOR_METHODS.items()
    }
    runs.update(
        {
            name: lambda b, make=make: make(b.n_components, means).fit_predict(
                b.images, mask=b.masks
            )
            for name, make in PRIOR_COLLECTION_METHODS.items()
        }
    )
    rows = []
    for name, run in runs.items():
        labels, seconds = timed(run, rest)
        seconds /= len(rest.images)
        dice = [
            slice_dice(rest, i, labels[i], matched=False) for i in range(len(labels))
        ]
        dataset = f"{benchmark.name}, means_init from {n_labelled} slices, no matching"
        rows.append(_result(dataset, name, rest.scored, dice, seconds))
    return rows


def _summary(scored, dice):
    """Dice per scored class and their mean, from per-slice Dice."""
    per_class = np.mean(dice, axis=0)
    return dict(
        dice={str(c): float(d) for c, d in zip(scored, per_class)},
        mean_dice=float(per_class.mean()),
    )


def _result(dataset, method, scored, dice, seconds, fits=()):
    """One row of results from per-slice Dice (slices x scored classes) and
    the ``(n_iter_, converged_)`` of the deep models fitted."""
    row = dict(
        dataset=dataset,
        method=method,
        **_summary(scored, dice),
        seconds_per_image=seconds,
        n_images=len(dice),
        overrides=dict(OVERRIDES),
    )
    if fits:
        n_iter, converged = np.array(fits).T
        row.update(n_iter=n_iter.tolist(), converged=int(converged.sum()))
    print(_row(row), flush=True)
    return row


def _n_iter_cell(row):
    """``n_iter_``: the median [range] and how many fits converged."""
    if "n_iter" not in row:
        return "—"
    n_iter = row["n_iter"]
    if len(n_iter) == 1:
        spread = str(n_iter[0])
    else:
        spread = f"{np.median(n_iter):.0f} [{min(n_iter)}–{max(n_iter)}]"
    return f"{spread}, {row['converged']}/{len(n_iter)} converged"


def _row(row):
    per_class = " / ".join(f"{d:.3f}" for d in row["dice"].values())
    return (
        f"| {row['dataset']} | {row['method']} | {row['mean_dice']:.3f} | "
        f"{per_class} | {row['seconds_per_image']:.2f} | {_n_iter_cell(row)} |"
    )


HEADER = (
    "| data | method | mean Dice | Dice per class | s / image | n_iter_ |\n"
    "|---|---|---|---|---|---|"
)


# The collection protocol (--collection, DESIGN §5): a study, one fit for all
# its slices. Each method maps (slices, a Prior or None) to (labels, the
# model fitted on the whole collection, or None for per-slice fits), or to
# None where it needs a prior.


@dataclass
class Prior:
    """What a few labelled slices tell: their class means, and the slices."""

    means: np.ndarray
    labelled: object  # a Benchmark


def per_slice_em(make_labels):
    """EM on each slice on its own, with ``means_init`` when given."""

    def run(benchmark, prior):
        means = None if prior is None else prior.means
        return per_slice(partial(make_labels, means_init=means))(benchmark), None

    return run


def deep_collection(benchmark, prior):
    means = None if prior is None else prior.means
    return fit_collection(benchmark, spatially_variant=False, means_init=means)


def labelled_collection(benchmark, prior):
    """One network fitted on the slices and the labelled ones, whose labels
    enter the fit (``labels=``); the labels of the slices. Without a prior
    it is "deepG on the collection"."""
    if prior is None:
        return None
    known = prior.labelled
    inside = known.masks & np.isin(known.labels, known.classes)
    partial_labels = np.where(inside, np.searchsorted(known.classes, known.labels), -1)
    model = _deep(n_components=benchmark.n_components)
    model.fit(
        np.concatenate([known.images, benchmark.images]),
        mask=np.concatenate([known.masks, benchmark.masks]),
        labels=np.concatenate([partial_labels, np.full(benchmark.masks.shape, -1)]),
    )
    return model.predict(benchmark.images, mask=benchmark.masks), _fitted(model)


COLLECTION_METHODS = {
    "GaussianMixture per slice": per_slice_em(gmm),
    "GaussianMixture+smooth per slice": per_slice_em(gmm_smoothed),
    "deepG on the collection": deep_collection,
    "deepG on the collection, labels of the prior's slices": labelled_collection,
}

# Channel whose mean intensity orders per-slice components (others: channel 0)
ORDER_CHANNEL = {"MyoPS": 1}  # LGE


def by_intensity(benchmark, labels):
    """Each slice's components renumbered by their pixels' mean intensity.

    Component 0 is the darkest on every slice (in channel
    ``ORDER_CHANNEL``), so that per-slice fits can be compared across
    slices; a component without pixels comes last.
    """
    channel = ORDER_CHANNEL.get(benchmark.name, 0)
    K = benchmark.n_components
    ordered = np.full(labels.shape, -1)
    for image, mask, components, out in zip(
        benchmark.images, benchmark.masks, labels, ordered
    ):
        values = (image[..., channel] if benchmark.images.ndim == 4 else image)[mask]
        counts = np.bincount(components[mask], minlength=K)
        sums = np.bincount(components[mask], weights=values, minlength=K)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
        rank = np.argsort(np.argsort(means, kind="stable"))
        out[mask] = rank[components[mask]]
    return ordered


def matched_once(benchmark, labels):
    """Components renamed by one matching for the whole collection.

    The Hungarian matching on Dice is computed once, on the masked pixels of
    all the slices together; component k of the result is class k.
    """
    masks, classes = benchmark.masks, np.asarray(benchmark.classes)
    matched = match_labels(
        benchmark.labels[masks], labels[masks], classes, range(benchmark.n_components)
    )
    renamed = np.full(labels.shape, -1)
    renamed[masks] = np.argmax(matched[:, None] == classes, axis=1)
    return renamed


def collection_dice(benchmark, labels, matched):
    """Dice per class and mean over the slices (each matched or not)."""
    dice = [
        slice_dice(benchmark, i, labels[i], matched=matched) for i in range(len(labels))
    ]
    return _summary(benchmark.scored, dice)


def _fit(benchmark, model, seconds):
    """Time of one run of a method and, for a collection fit, its training."""
    fit = dict(seconds=seconds, seconds_per_image=seconds / len(benchmark.images))
    if model is not None:
        fit.update(n_iter=int(model.n_iter_), converged=bool(model.converged_))
    return fit


def evaluate_collection(benchmark, n_labelled=3):
    """The collection protocol: every method with and without a prior.

    With ``means_init`` from at most ``n_labelled`` labelled slices (one per
    patient, leaving at least one patient), the other slices are scored
    without matching. Without a prior, all the slices are scored after one
    label-to-class matching for the whole collection (per-slice fits ordered
    by intensity first) and after matching each slice.
    """
    n_labelled = min(n_labelled, len(np.unique(benchmark.groups)) - 1)
    labelled = labelled_slices(benchmark, n_labelled)
    rest = rest_of(benchmark, labelled)
    prior = None
    if labelled:
        prior = Prior(class_means(benchmark, labelled), benchmark.subset(labelled))
    rows = []
    for name, run in COLLECTION_METHODS.items():
        row = dict(dataset=benchmark.name, method=name, n_images=len(benchmark.images))
        if labelled:
            (labels, model), seconds = timed(partial(run, prior=prior), rest)
            row["with_prior"] = dict(
                n_labelled=len(labelled),
                n_images=len(rest.images),
                **collection_dice(rest, labels, matched=False),
                **_fit(rest, model, seconds),
            )
        row.update(per_slice_matched=None, one_matching=None, without_prior=None)
        result, seconds = timed(partial(run, prior=None), benchmark)
        if result is not None:
            labels, model = result
            row["per_slice_matched"] = collection_dice(benchmark, labels, matched=True)
            if model is None:
                labels = by_intensity(benchmark, labels)
            once = matched_once(benchmark, labels)
            row["one_matching"] = collection_dice(benchmark, once, matched=False)
            row["without_prior"] = _fit(benchmark, model, seconds)
        row.update(overrides=dict(OVERRIDES))
        print(_collection_row(row), flush=True)
        rows.append(row)
    return rows


def _dice_cell(summary):
    """Mean Dice, and the Dice per class when several are scored."""
    if summary is None:
        return "—"
    cell = f"{summary['mean_dice']:.3f}"
    if len(summary["dice"]) > 1:
        cell += " (" + " / ".join(f"{d:.3f}" for d in summary["dice"].values()) + ")"
    return cell


def _collection_row(row):
    prior = row.get("with_prior")
    fits = [fit for fit in (prior, row["without_prior"]) if fit is not None]
    seconds = " / ".join(f"{fit['seconds']:.1f}" for fit in fits)
    per_image = " / ".join(f"{fit['seconds_per_image']:.2f}" for fit in fits)
    n_iter = " / ".join(
        f"{fit['n_iter']}{'' if fit['converged'] else ' (not converged)'}"
        for fit in fits
        if "n_iter" in fit
    )
    labelled = f", prior from {prior['n_labelled']} slices" if prior else ""
    return (
        f"| {row['dataset']} ({row['n_images']} slices{labelled}) | {row['method']} | "
        f"{_dice_cell(prior)} | {_dice_cell(row['one_matching'])} | "
        f"{_dice_cell(row['per_slice_matched'])} | {seconds} | {per_image} | "
        f"{n_iter or '—'} |"
    )


COLLECTION_HEADER = (
    "| data | method | Dice with prior, no matching | Dice, one matching | "
    "Dice, matched per slice | total s (prior / none) | s / image (prior / none) | "
    "n_iter_ (prior / none) |\n|---|---|---|---|---|---|---|---|"
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every 4th slice")
    parser.add_argument("--datasets", nargs="+", default=list(datasets.LOADERS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument(
        "--prior", action="store_true", help="also the means_init protocol on MyoPS"
    )
    parser.add_argument(
        "--collection",
        action="store_true",
        help="the collection protocol (one fit for all slices) instead of the "
        "per-image table",
    )
    parser.add_argument(
        "--params",
        type=json.loads,
        default={},
        help="DeepGaussianMixture settings for a study, as JSON "
        "(e.g. '{\"spatial_regularization\": 2}')",
    )
    parser.add_argument(
        "--output", default=str(Path(__file__).parent / "results" / "quality")
    )
    args = parser.parse_args()
    OVERRIDES.update(args.params)
    if not datasets.available():
        print(f"skipped: the benchmark data is not in {datasets.DATA}")
        return
    header, format_row = (
        (COLLECTION_HEADER, _collection_row) if args.collection else (HEADER, _row)
    )
    print(header)
    rows = []
    for key in args.datasets:
        benchmark = datasets.LOADERS[key]()
        if args.quick:
            benchmark = benchmark.subset(slice(None, None, 4))
        if args.collection:
            rows += evaluate_collection(benchmark)
            continue
        rows += evaluate(benchmark, args.methods)
        if args.prior and key == "myops":
            rows += evaluate_with_prior(benchmark)
    output = Path(args.output)
    if args.collection:
        output = output.with_name(output.name + "_collection")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    output.with_suffix(".md").write_text(
        "\n".join([header] + [format_row(r) for r in rows]) + "\n"
    )


if __name__ == "__main__":
    main()
