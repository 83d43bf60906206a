"""Speed and scale of DeepGaussianMixture against scikit-learn's GaussianMixture.

Every case runs in its own process, so that its peak memory is its own, and
compares with ``GaussianMixture`` on the same pixels in the same process.

Cases
-----
fit          one 256 x 256 image: fit time over GaussianMixture.fit, and where
             the time goes (initial EM, pre-training, training, the rest)
steps        cost of one network training step (forward, backward, AdamW) and
             of one forward pass, by window size and network width: the
             per-step levers of the fit and of amortized inference
predict      a model trained on other images labels new ones (a 256 x 256
             image, a stack of 16, a 3-channel image inside a 112 x 112
             mask): predict in torch and in ONNX Runtime (where installed),
             and adapted to each image (adapt_iter=10, by EM and by a
             copy of the network fine-tuned on it), against
             GaussianMixture.fit_predict on the same pixels, median and
             range of repeats, labels' digests
scaling      predict (and fit, 10 iterations) on one image from 128^2 to
             4096^2 pixels: time and peak memory
volume       fit and predict a 128^3 volume (``spatial_dims=3``)
memmap       fit on a memory-mapped stack on disk, 16 times a training batch
dask         predict block-wise on a dask array with a local cluster
gridsearch   GridSearchCV over n_components, n_jobs=1 against n_jobs=2

Usage::

    python benchmarks/speed.py [--cases fit predict ...]
                               [--output benchmarks/results/speed]

Prints a markdown table per case and writes all figures to a JSON file.
Times are the best of a few repeats on a warm process; these machines are
noisy, so compare the ratios, which are measured side by side.
"""

import argparse
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture
from skdgmm.datasets import load_nuclei, make_segmentation_images

warnings.simplefilter("ignore", ConvergenceWarning)


def _status(field):
    """A memory figure of this process from /proc, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


class PeakMemory:
    """Peak of the anonymous resident memory (heap, tensors; not the pages of
    memory-mapped files) while the block runs, above its start, in MB."""

    def __enter__(self):
        self.start = self.peak = _status("RssAnon")
        self._running = True
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while self._running:
            self.peak = max(self.peak, _status("RssAnon"))
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._running = False
        self._thread.join()
        self.peak = max(self.peak, _status("RssAnon"))
        self.used = self.peak - self.start


def spread(run, repeat):
    """Median, min and max seconds of ``repeat`` calls of ``run``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), min(times), max(times)


def best_time(run, repeat=3):
    """The fastest of ``repeat`` calls of ``run``, in seconds."""
    return spread(run, repeat)[1]


def _warm_up():
    """First calls of torch pay one-off costs (threads, kernels)."""
    X, _ = make_segmentation_images(1, (32, 32), random_state=0)
    DeepGaussianMixture(2, max_iter=2, init_iter=1, random_state=0).fit_predict(X)


def _phases(model, X):
    """Fit ``model`` on X and time its phases by wrapping the functions that
    the fit calls (skdgmm._fitting's optimize and GaussianMixture.fit): the
    total, the seconds per phase, and the iterations of all its trainings
    (pre-training included)."""
    import skdgmm._fitting as module

    spent = {}

    def timed(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - start

        return wrapper

    originals = module.optimize, module.GaussianMixture.fit
    iterations = []  # of each optimize call that returned

    def optimize(*args, **kwargs):
        # pre-training and training alternate (a fit that empties a component
        # is trained twice)
        phase = "training" if len(iterations) % 2 else "pre-training"
        history = timed(phase, originals[0])(*args, **kwargs)
        iterations.append(len(history.losses))
        return history

    module.optimize = optimize
    module.GaussianMixture.fit = timed("initial EM", originals[1])
    try:
        start = time.perf_counter()
        model.fit(X)
        total = time.perf_counter() - start
    finally:
        module.optimize, module.GaussianMixture.fit = originals
    spent["rest"] = total - sum(spent.values())
    return total, spent, sum(iterations)


def case_fit():
    images = {
        "nuclei (real), K=2": (load_nuclei()[0][None], 2),
        "synthetic, K=3": (
            make_segmentation_images(1, (256, 256), noise=0.4, random_state=0)[0],
            3,
        ),
    }
    rows = []
    for name, (X, k) in images.items():
        pixels = X.reshape(-1, 1)
        gmm = best_time(lambda: GaussianMixture(k, random_state=0).fit(pixels))
        for setting, params in [
            ("defaults", {}),
            ("learning_rate=0.03", {"learning_rate": 0.03}),
        ]:
            model = DeepGaussianMixture(k, random_state=0, **params)
            total, phases, n_steps = _phases(model, X)
            rows.append(
                dict(
                    image=name,
                    setting=setting,
                    gmm_s=gmm,
                    dgmm_s=total,
                    ratio=total / gmm,
                    n_iter=model.n_iter_,
                    s_per_iteration=(phases["pre-training"] + phases["training"])
                    / n_steps,
                    **{f"{p}_s": t for p, t in phases.items()},
                )
            )
    return rows


def case_steps():
    import torch

    from skdgmm._networks import build_network

    def network(width):
        return build_network(
            1,
            3,
            kind="unet",
            width=width,
            depth=2,
            spatial_dims=2,
            generator=torch.Generator().manual_seed(0),
        )

    def step_and_forward(net, edge):
        x = torch.randn(1, 1, edge, edge)
        optimizer = torch.optim.AdamW(net.parameters())

        def step():
            optimizer.zero_grad()
            # a stand-in loss: the mixture energy adds little to the network
            net(x).square().mean().backward()
            optimizer.step()

        net.train()
        step_s = best_time(step, repeat=10)
        net.eval()
        with torch.no_grad():
            forward_s = best_time(lambda: net(x), repeat=10)
        return dict(step_ms=1e3 * step_s, forward_ms=1e3 * forward_s)

    rows = [
        dict(edge=edge, width=8, **step_and_forward(network(8), edge))
        for edge in (256, 192, 128, 96, 64)
    ]
    rows += [
        dict(edge=256, width=width, **step_and_forward(network(width), 256))
        for width in (6, 4)
    ]
    return rows


def _masked_crops(n_images):
    """3-channel 256 x 256 images whose mask is a 112 x 112 box (the size of
    the myocardium crops of the paper's task)."""
    X, _ = make_segmentation_images(n_images, (256, 256), noise=0.4, random_state=0)
    X = np.stack([X, X**2, np.sqrt(np.abs(X))], axis=-1)
    mask = np.zeros(X.shape[:3], dtype=bool)
    mask[:, 72:184, 72:184] = True
    return X, mask


def case_predict(repeat=15):
    """A model trained on other images labels new ones: predict (in torch,
    and in ONNX Runtime where it is installed) against
    GaussianMixture.fit_predict on the same pixels (per image), each timed in
    its own block of ``repeat`` calls: median and range, ms per image. The
    labels' digest tells whether two versions (or runtimes) label alike."""
    X, _ = make_segmentation_images(25, (256, 256), noise=0.4, random_state=0)
    crops, mask = _masked_crops(10)
    whole = DeepGaussianMixture(3, random_state=0).fit(X[:8])
    cropped = DeepGaussianMixture(3, random_state=0).fit(crops[:8], mask=mask[:8])
    settings = [
        ("256², one image", whole, X[8:9], None, [X[8].reshape(-1, 1)]),
        ("256², stack of 16", whole, X[9:], None, [x.reshape(-1, 1) for x in X[9:]]),
        ("112² crops, 3 channels", cropped, crops[8:9], mask[8:9], [crops[8][mask[8]]]),
    ]
    installed = importlib.util.find_spec("onnxruntime") is not None
    runtimes = ["torch"] + (["onnxruntime"] if installed else [])
    rows = []
    for name, model, new, new_mask, pixels in settings:

        def em():
            for image_pixels in pixels:
                GaussianMixture(3, random_state=0).fit_predict(image_pixels)

        row = dict(images=name)
        gmm = [1e3 * t / len(new) for t in spread(em, repeat)]
        row.update(gmm_fit_predict_ms=gmm[0], gmm_range_ms=_range(gmm))
        for runtime in runtimes:
            model.set_params(runtime=runtime)
            labels = model.predict(new, mask=new_mask)  # and export, once
            deep = [
                1e3 * t / len(new)
                for t in spread(lambda: model.predict(new, mask=new_mask), repeat)
            ]
            row[f"{runtime}_ms"] = deep[0]
            row[f"{runtime}_range_ms"] = _range(deep)
            row[f"{runtime}_speedup"] = gmm[0] / deep[0]
            row[f"{runtime}_labels_md5"] = hashlib.md5(labels.tobytes()).hexdigest()[:8]
        # adapted to each image (the default runtime), in its own block too
        model.set_params(runtime="auto", adapt_iter=10)
        adapted = [
            1e3 * t / len(new)
            for t in spread(lambda: model.predict(new, mask=new_mask), repeat)
        ]
        # a copy of the network trained 10 steps on each image: seconds,
        # so fewer repeats
        model.set_params(adapt_method="network")
        tuned = [
            1e3 * t / len(new)
            for t in spread(lambda: model.predict(new, mask=new_mask), 3)
        ]
        model.set_params(adapt_iter=0, adapt_method="em")
        row.update(adapt10_ms=adapted[0], adapt10_range_ms=_range(adapted))
        row.update(network10_ms=tuned[0], network10_range_ms=_range(tuned))
        rows.append(row)
    return rows


def _range(times):
    return f"{times[1]:.3g}–{times[2]:.3g}"


def case_scaling():
    train, _ = make_segmentation_images(2, (128, 128), noise=0.4, random_state=0)
    model = DeepGaussianMixture(3, random_state=0).fit(train)
    rows = []
    for size in (128, 256, 512, 1024, 2048, 4096):
        X, _ = make_segmentation_images(
            1, (size, size), noise=0.4, smoothness=size / 32, random_state=0
        )
        X = X.astype(np.float32)
        with PeakMemory() as memory:
            predict = best_time(lambda: model.predict(X), repeat=1)
        row = dict(
            pixels=size * size,
            predict_s=predict,
            predict_peak_mb=memory.used,
            input_mb=X.nbytes / 2**20,
        )
        if size <= 1024:
            fitted = DeepGaussianMixture(3, random_state=0, max_iter=10, init_iter=2)
            with PeakMemory() as memory:
                row["fit_10_iter_s"] = best_time(lambda: fitted.fit(X), repeat=1)
            row["fit_peak_mb"] = memory.used
            row["gmm_fit_s"] = best_time(
                lambda: GaussianMixture(3, random_state=0).fit(X.reshape(-1, 1)),
                repeat=1,
            )
        rows.append(row)
    return rows


def case_volume():
    X, y = make_segmentation_images(
        1, (128, 128, 128), noise=0.4, smoothness=6, random_state=0
    )
    X = X.astype(np.float32)
    model = DeepGaussianMixture(3, spatial_dims=3, random_state=0)
    with PeakMemory() as fit_memory:
        fit = best_time(lambda: model.fit(X), repeat=1)
    with PeakMemory() as predict_memory:
        predict = best_time(lambda: model.predict(X), repeat=1)
    gmm = best_time(
        lambda: GaussianMixture(3, random_state=0).fit(X.reshape(-1, 1)), repeat=1
    )
    from sklearn.metrics import adjusted_rand_score

    return [
        dict(
            voxels=X.size,
            fit_s=fit,
            n_iter=model.n_iter_,
            fit_peak_mb=fit_memory.used,
            predict_s=predict,
            predict_peak_mb=predict_memory.used,
            gmm_fit_s=gmm,
            ari=adjusted_rand_score(y.ravel(), model.predict(X).ravel()),
        )
    ]


def case_memmap():
    batch_size = 4
    X, _ = make_segmentation_images(
        16 * batch_size, (512, 512), noise=0.4, smoothness=16, random_state=0
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stack.npy"
        np.save(path, X.astype(np.float32))
        del X
        stack = np.load(path, mmap_mode="r")
        model = DeepGaussianMixture(
            3, batch_size=batch_size, max_iter=2, init_iter=1, random_state=0
        )
        with PeakMemory() as memory:
            fit = best_time(lambda: model.fit(stack), repeat=1)
        return [
            dict(
                stack_mb=stack.nbytes / 2**20,
                batch_mb=stack[:batch_size].nbytes / 2**20,
                fit_s=fit,
                peak_mb=memory.used,
            )
        ]


def case_dask():
    import dask.array as da
    from distributed import Client

    X, _ = make_segmentation_images(16, (256, 256), noise=0.4, random_state=0)
    model = DeepGaussianMixture(3, random_state=0, max_iter=10).fit(X[:4])
    direct = best_time(lambda: model.predict(X), repeat=1)
    lazy = da.from_array(X, chunks=(4, -1, -1))
    with Client(processes=False, n_workers=1, threads_per_worker=2):
        labels = lazy.map_blocks(model.predict, dtype=int)
        blockwise = best_time(labels.compute, repeat=1)
        same = bool((labels.compute() == model.predict(X)).all())
    return [dict(images=len(X), predict_s=direct, dask_s=blockwise, identical=same)]


def case_gridsearch():
    from sklearn.model_selection import GridSearchCV

    from skdgmm.metrics import bic_scorer

    X, _ = make_segmentation_images(6, (48, 48), noise=0.2, random_state=0)
    rows = []
    for n_jobs in (1, 2):
        search = GridSearchCV(
            DeepGaussianMixture(random_state=0, max_iter=20),
            {"n_components": [2, 3, 4]},
            scoring=bic_scorer,
            cv=2,
            n_jobs=n_jobs,
        )
        seconds = best_time(lambda: search.fit(X), repeat=1)
        rows.append(
            dict(
                n_jobs=n_jobs, seconds=seconds, best=search.best_params_["n_components"]
            )
        )
    return rows


CASES = {
    "fit": case_fit,
    "steps": case_steps,
    "predict": case_predict,
    "scaling": case_scaling,
    "volume": case_volume,
    "memmap": case_memmap,
    "dask": case_dask,
    "gridsearch": case_gridsearch,
}


def _table(name, rows):
    columns = list(rows[0])
    lines = [f"### {name}", "", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument(
        "--output", default=str(Path(__file__).parent / "results" / "speed")
    )
    parser.add_argument("--run-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_case:  # inside the child process of one case
        _warm_up()
        print(json.dumps(CASES[args.run_case]()))
        return
    results = {}
    for name in args.cases:
        child = subprocess.run(
            [sys.executable, __file__, "--run-case", name],
            capture_output=True,
            text=True,
        )
        if child.returncode:
            print(f"### {name}\n\nfailed:\n{child.stderr[-2000:]}\n", flush=True)
            continue
        results[name] = json.loads(child.stdout.strip().splitlines()[-1])
        print(_table(name, results[name]), flush=True)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    output.with_suffix(".md").write_text(
        "\n".join(_table(name, rows) for name, rows in results.items())
    )


if __name__ == "__main__":
    main()
