"""A quick linear baseline that checks a store's features, labels and folds line up.

This is not any paper's CNN. It pools each clip's features into the mean and
standard deviation of every band (and channel) over the clip's valid frames,
standardises them, and fits a multinomial logistic regression, cross-validated
over the dataset's own folds. If the features carry the labels and the folds
are sane, it scores well above chance within seconds; if rows, labels or folds
were shuffled, it drops to chance.

scikit-learn and matplotlib are an optional extra: ``pip install -e '.[evaluate]'``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from melstore.errors import MelstoreError
from melstore.files import atomic_path
from melstore.store.reader import LABEL_COLUMNS, UNLABELLED, Store

EXTRA = "pip install -e '.[evaluate]'"
# The metadata column holding each layout's class name.
RESULT_COLUMNS = ["fold", "n_train", "n_test", "accuracy"]


@dataclass(frozen=True)
class BaselineResult:
    """Per-fold scores and every clip's held-out prediction.

    Attributes
    ----------
    folds : pd.DataFrame
        One row per fold: ``fold, n_train, n_test, accuracy``.
    classes : list of str
        The class names, sorted.
    y_true, y_pred : np.ndarray
        Each labelled clip's class and its prediction by the model that did not see its fold.
    n_unlabelled : int
        Clips left out because they have no label (``''``).
    """

    folds: pd.DataFrame
    classes: list[str]
    y_true: np.ndarray
    y_pred: np.ndarray
    n_unlabelled: int = 0

    @property
    def mean_accuracy(self) -> float:
        """The mean of the per-fold accuracies."""
        return float(self.folds["accuracy"].mean())


def evaluate_store(path: str | Path, *, batch_size: int = 256) -> BaselineResult:
    """Cross-validate the linear baseline on one store.

    Parameters
    ----------
    path : str or Path
        A melstore store with a label column (``class`` for UrbanSound8K,
        ``category`` for ESC-50, ``label`` for folders).
    batch_size : int
        Clips read at a time, which bounds the memory used.

    Returns
    -------
    BaselineResult

    Raises
    ------
    MelstoreError
        If scikit-learn is missing, the store has no label column, fewer than
        two classes, or fewer than two folds. Unlabelled clips are left out.
    """
    require_extra()
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    with Store(path) as store:
        metadata, label_column = store.metadata, store.label_column
        if label_column is None:
            raise MelstoreError(
                f"{path}: no label column ({', '.join(LABEL_COLUMNS)}) in the metadata"
            )
        folds = store.fold_of_rows()  # the store's own folds: the same as Store.folds()
        pooled = pooled_features(
            store.features, metadata, concatenated=not store.fixed_length, batch_size=batch_size
        )
    labels = metadata[label_column].astype(str).to_numpy()
    labelled = labels != UNLABELLED  # an unlabelled clip can be neither trained on nor scored
    labels, pooled, folds = labels[labelled], pooled[labelled], folds[labelled]
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise MelstoreError(f"{path}: the baseline needs at least 2 classes in {label_column!r}")
    if folds.nunique() < 2:
        raise MelstoreError(f"{path}: the baseline needs at least 2 folds in {folds.name!r}")
    folds = folds.to_numpy()
    predictions = np.empty(len(labels), dtype=object)
    rows = []
    for fold in sorted(set(folds)):
        test = folds == fold
        # sklearn's default tol: 1e-3 would be 3x faster but stops short on small,
        # separable datasets (one more demo clip misclassified); float32 input
        # halves the time instead, at the same accuracy
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        try:
            model.fit(pooled[~test], labels[~test])
        except ValueError as err:  # e.g. one class left in the training folds
            raise MelstoreError(f"{path}: cannot train without fold {fold}: {err}") from None
        predictions[test] = model.predict(pooled[test])
        accuracy = float(np.mean(predictions[test] == labels[test]))
        rows.append((fold, int((~test).sum()), int(test.sum()), accuracy))
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    return BaselineResult(
        table, classes, labels, predictions.astype(str), n_unlabelled=int((~labelled).sum())
    )


def pooled_features(
    features: h5py.Dataset,
    metadata: pd.DataFrame,
    *,
    concatenated: bool = False,
    batch_size: int = 256,
) -> np.ndarray:
    """Each clip's per-band mean and standard deviation over its valid frames.

    Padding frames (after ``n_frames_valid``) are left out, so a clip's
    length does not leak into its statistics.

    Returns
    -------
    np.ndarray
        float32 (n_clips, 2 * n_channels * n_bins): all means, then all
        standard deviations.
    """
    if concatenated:
        offsets, counts = metadata["frame_offset"].to_numpy(), metadata["n_frames"].to_numpy()
        blocks = [
            _pool(features[:, start : start + count][None], np.array([count]))
            for start, count in zip(offsets, counts, strict=True)
        ]
        return (
            np.concatenate(blocks) if blocks else np.empty((0, 2 * features.shape[0]), np.float32)
        )
    valid = metadata["n_frames_valid"].to_numpy()
    blocks = [
        _pool(features[start : start + batch_size], valid[start : start + batch_size])
        for start in range(0, len(features), batch_size)
    ]
    n_columns = 2 * int(np.prod(features.shape[1:-1]))
    return np.concatenate(blocks) if blocks else np.empty((0, n_columns), np.float32)


def _pool(block: np.ndarray, n_valid: np.ndarray) -> np.ndarray:
    """Masked mean and std over the last axis of float32 (clips, ..., frames).

    The arithmetic stays in float32 with float64 sums: twice as fast as
    converting the block to float64, and within 1e-6 of it.
    """
    n_frames = block.shape[-1]
    counts = np.clip(n_valid, 1, n_frames).reshape(-1, *([1] * (block.ndim - 1)))
    mask = np.arange(n_frames) < counts
    zero = np.float32(0)
    mean = np.where(mask, block, zero).sum(axis=-1, keepdims=True, dtype=np.float64) / counts
    deviation = np.where(mask, block - mean.astype(np.float32), zero)
    std = np.sqrt(np.square(deviation).sum(axis=-1, keepdims=True, dtype=np.float64) / counts)
    pooled = np.concatenate([mean.reshape(len(block), -1), std.reshape(len(block), -1)], axis=1)
    return pooled.astype(np.float32)


def write_results(
    result: BaselineResult, *, table_path: str | Path, figure_path: str | Path, title: str
) -> None:
    """Write the per-fold CSV and the confusion-matrix figure (PNG), atomically."""
    with atomic_path(table_path) as tmp:
        result.folds.to_csv(tmp, index=False)
    plot_confusion(result, figure_path, title=title)


def plot_confusion(result: BaselineResult, path: str | Path, *, title: str) -> None:
    """Row-normalised confusion matrix of the held-out predictions, over all folds."""
    require_extra()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    n_classes = len(result.classes)
    size = max(4.0, 2.0 + 0.3 * n_classes)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay.from_predictions(
        result.y_true,
        result.y_pred,
        labels=result.classes,
        normalize="true",
        include_values=n_classes <= 15,  # 50 ESC-50 classes leave no room for numbers
        values_format=".2f",
        cmap="Blues",
        colorbar=False,
        xticks_rotation="vertical",
        ax=ax,
    )
    ax.set_title(f"{title}\nmean fold accuracy {result.mean_accuracy:.3f}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def require_extra() -> None:
    """Fail with one line naming the extra when scikit-learn or matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as err:
        raise MelstoreError(
            f"the evaluate target needs scikit-learn and matplotlib, {err.name} is missing: {EXTRA}"
        ) from None


def extra_versions() -> dict[str, str]:
    """Versions of the baseline's libraries, without importing them (for rule params)."""
    versions = {}
    for name in ("scikit-learn", "matplotlib"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions
