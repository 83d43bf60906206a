"""DeepGaussianMixture vs GaussianMixture on a synthetic image stack.

Piecewise-constant images with Gaussian noise (``skdgmm.datasets``), both
models with default settings on the same pixels in the same run; prints the
adjusted Rand index against the truth and the fit time, and their ratios.

    python benchmarks/synthetic.py [--n-images 8] [--size 64] [--noise 0.4]
"""

import argparse
import time

from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture

from skdgmm import DeepGaussianMixture
from skdgmm.datasets import make_segmentation_images


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--noise", type=float, default=0.4)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    print(
        f"{args.n_images} images {args.size}x{args.size}, K={args.classes}, "
        f"noise={args.noise} (classes 1 apart)\n"
        f"{'seed':>4} {'ARI GMM':>8} {'ARI DGMM':>9} {'t GMM s':>8} {'t DGMM s':>9} {'t ratio':>8}"
    )
    for seed in range(args.seeds):
        X, truth = make_segmentation_images(
            args.n_images,
            (args.size, args.size),
            n_classes=args.classes,
            noise=args.noise,
            random_state=seed,
        )
        start = time.perf_counter()
        gmm = GaussianMixture(args.classes, random_state=seed)
        gmm_labels = gmm.fit(X.reshape(-1, 1)).predict(X.reshape(-1, 1))
        t_gmm = time.perf_counter() - start
        start = time.perf_counter()
        dgmm_labels = DeepGaussianMixture(
            args.classes, random_state=seed, device="cpu"
        ).fit_predict(X)
        t_dgmm = time.perf_counter() - start
        ari_gmm = adjusted_rand_score(truth.ravel(), gmm_labels)
        ari_dgmm = adjusted_rand_score(truth.ravel(), dgmm_labels.ravel())
        print(
            f"{seed:>4} {ari_gmm:>8.3f} {ari_dgmm:>9.3f} {t_gmm:>8.2f} "
            f"{t_dgmm:>9.2f} {t_dgmm / t_gmm:>8.1f}"
        )


if __name__ == "__main__":
    main()
