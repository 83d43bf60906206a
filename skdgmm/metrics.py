"""Segmentation metrics and model-selection scorers."""

import inspect

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.pipeline import Pipeline
from sklearn.utils.metadata_routing import MetadataRequest


def dice_score(y_true, y_pred, labels):
    """Dice coefficient of each label.

    Parameters
    ----------
    y_true, y_pred : array-like of int, same shape
    labels : sequence of int
        Labels to score. A label absent from both arrays scores NaN.

    Returns
    -------
    dice : ndarray of shape (len(labels),)

    Examples
    --------
    >>> from skdgmm.metrics import dice_score
    >>> dice_score([0, 1, 1, 2], [0, 1, 2, 2], labels=[1, 2])
    array([0.66666667, 0.66666667])
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    dice = []
    for label in labels:
        t, p = y_true == label, y_pred == label
        total = t.sum() + p.sum()
        dice.append(2 * np.logical_and(t, p).sum() / total if total else np.nan)
    return np.array(dice)


def match_labels(y_true, y_pred, labels, clusters):
    """Relabel clusters to the labels they overlap best (Hungarian on Dice).

    Parameters
    ----------
    y_true, y_pred : array-like of int, same shape
    labels : sequence of int
        True labels to match.
    clusters : sequence of int
        Predicted cluster ids to match.

    Returns
    -------
    y_matched : ndarray
        ``y_pred`` with each matched cluster replaced by its label; unmatched
        clusters become -1. A label and a cluster that are both absent count
        as a perfect match.

    Examples
    --------
    >>> from skdgmm.metrics import match_labels
    >>> match_labels([1, 1, 2, 2], [0, 0, 1, 1], labels=[1, 2], clusters=[0, 1])
    array([1, 1, 2, 2])
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    dice = np.array(
        [
            [
                dice_score(y_true == label, y_pred == cluster, [True])[0]
                for cluster in clusters
            ]
            for label in labels
        ]
    )
    # a label and a cluster both absent agree perfectly
    rows, cols = linear_sum_assignment(np.nan_to_num(dice, nan=1.0), maximize=True)
    y_matched = np.full(
        y_pred.shape, -1, dtype=np.result_type(np.asarray(labels).dtype, np.int8)
    )
    for row, col in zip(rows, cols):
        y_matched[y_pred == clusters[col]] = labels[row]
    return y_matched


def bic_scorer(estimator, X, y=None, *, mask=None):
    """Negative BIC of a fitted mixture (or a Pipeline ending in one).

    Usable as ``scoring`` in :class:`~sklearn.model_selection.GridSearchCV`:
    higher is better. ``mask`` goes to ``bic`` (and to the ``transform`` of
    the steps of a Pipeline that take one).

    A model fitted with a mask must be scored with one, or its BIC would
    count every pixel, the background included: the scorer refuses it
    without. scikit-learn passes fit's ``mask`` on to the scorer (split
    like ``X``) only with metadata routing, which the scorer requests the
    mask from::

        sklearn.set_config(enable_metadata_routing=True)
        search = GridSearchCV(
            DeepGaussianMixture().set_fit_request(mask=True),
            {"n_components": [2, 3, 4]},
            scoring=bic_scorer,
        ).fit(images, mask=mask)

    Raises
    ------
    ValueError
        If the model was fitted with a mask and ``mask`` is None.

    Examples
    --------
    >>> from sklearn.mixture import GaussianMixture
    >>> from sklearn.model_selection import GridSearchCV
    >>> from skdgmm.metrics import bic_scorer
    >>> import numpy as np
    >>> X = np.r_[np.zeros((50, 1)), np.ones((50, 1))] + np.random.RandomState(0).normal(0, .1, (100, 1))
    >>> search = GridSearchCV(GaussianMixture(), {"n_components": [1, 2, 3]}, scoring=bic_scorer)
    >>> search.fit(X).best_params_
    {'n_components': 2}
    """
    if isinstance(estimator, Pipeline):
        steps = [step for _, step in estimator.steps]
    else:
        steps = [estimator]
    fitted_with_mask = any(getattr(step, "_fitted_with_mask", False) for step in steps)
    if mask is None and fitted_with_mask:
        raise ValueError(
            "The model was fitted with a mask, but bic_scorer got none: its "
            "BIC would count every pixel, the background included. Pass the "
            "mask of X (mask=...). In GridSearchCV or cross_validate, turn on "
            "scikit-learn's metadata routing, which passes fit's mask on to "
            "the scorer: sklearn.set_config(enable_metadata_routing=True) and "
            "estimator.set_fit_request(mask=True) (bic_scorer requests the mask "
            "itself)."
        )
    kwargs = {} if mask is None else {"mask": mask}
    for step in steps[:-1]:
        if step is None or step == "passthrough":
            continue
        takes_mask = "mask" in inspect.signature(step.transform).parameters
        X = step.transform(X, **kwargs) if takes_mask else step.transform(X)
    return -steps[-1].bic(X, **kwargs)


def _bic_scorer_routing():
    """bic_scorer requests the ``mask`` of the data it scores (metadata
    routing)."""
    request = MetadataRequest(owner="bic_scorer")
    request.score.add_request(param="mask", alias=True)
    return request


bic_scorer.get_metadata_routing = _bic_scorer_routing
