"""Mean and std of a store's features per fold, for normalising without leakage.

In K-fold cross-validation the statistics that normalise a model's input must
come from its training clips only. A store keeps, for each fold, the moments
of the frames of its clips: the number of valid frames (zero padding left
out), and per bin (per channel and bin with deltas) their mean and their sum
of squared deviations, M2. The train statistics of any held-out fold follow
exactly by pooling the other folds' moments (Chan, Golub and LeVeque's
parallel formulas), so they cost no pass over the features.

The moments are computed in one streaming pass: each extraction worker
computes one clip's moments from its stored values (kept in float32, see
:data:`CLIP_MOMENTS_DTYPE`), and the gather pools each shard's clips into
their folds in float64. Memory holds one shard's clip moments
and the folds' totals, whatever the size of the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np

# The store's group holding the moments of each fold (see docs/store-format.md).
STATS_GROUP = "stats"
# A shard's group holding the moments of each of its clips, in row order.
MOMENTS_GROUP = "moments"
# A shard keeps its clips' means and M2 in float32, the precision of the features themselves,
# in half the bytes of float64 (docs/design.md). They are pooled in float64.
CLIP_MOMENTS_DTYPE = np.float32


@dataclass(frozen=True)
class Moments:
    """Frame counts, means and M2 (sums of squared deviations) of groups of frames.

    Attributes
    ----------
    count : np.ndarray
        float64 (n_groups,): valid frames of each group.
    mean : np.ndarray
        float64 (n_groups, *frame): the mean of each bin over the group's frames.
    m2 : np.ndarray
        float64 (n_groups, *frame): the sum of squared deviations from that mean.
    """

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of_clip(cls, values: np.ndarray, *, n_frames: int) -> Moments:
        """One group: the first ``n_frames`` frames (the last axis) of one clip's values."""
        frames = np.array(values[..., :n_frames], dtype=np.float64)  # a copy, centred in place
        if n_frames == 0:
            zero = np.zeros(frames.shape[:-1])
            return cls(np.zeros(1), zero[None], zero[None])
        mean = frames.mean(axis=-1)
        frames -= mean[..., None]
        m2 = np.einsum("...t,...t->...", frames, frames)
        return cls(np.array([float(n_frames)]), mean[None], m2[None])

    @classmethod
    def empty(cls, n_groups: int, frame_shape: tuple[int, ...]) -> Moments:
        """``n_groups`` groups of no frames."""
        zeros = np.zeros((n_groups, *frame_shape))
        return cls(np.zeros(n_groups), zeros, zeros.copy())

    @classmethod
    def concatenate(cls, parts: list[Moments]) -> Moments:
        """The groups of every part, end to end."""
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in _FIELDS))

    def __len__(self) -> int:
        return len(self.count)

    @property
    def nbytes(self) -> int:
        """The bytes of the arrays, as a shard keeps them (:meth:`clip_arrays`)."""
        return sum(array.nbytes for array in self.clip_arrays().values())

    def __setitem__(self, row: int, clip: Moments) -> None:
        """Put one group's moments (e.g. :meth:`of_clip`'s) at ``row``."""
        self.count[row], self.mean[row], self.m2[row] = clip.count[0], clip.mean[0], clip.m2[0]

    def __getitem__(self, rows) -> Moments:
        return Moments(self.count[rows], self.mean[rows], self.m2[rows])

    def pooled(self, groups: np.ndarray, n_groups: int) -> Moments:
        """Pool these groups into ``n_groups`` larger ones: group ``i`` goes into ``groups[i]``.

        Exact (up to rounding) for any split of the frames: the pooled mean is
        the count-weighted mean, and the pooled M2 adds each part's M2 to its
        count times the squared distance of its mean from the pooled mean.
        """
        groups = np.asarray(groups, dtype=np.int64)
        count = np.bincount(groups, weights=self.count, minlength=n_groups)
        weights = self.count.reshape(-1, *([1] * (self.mean.ndim - 1)))
        total = _group_sums(weights * self.mean, groups, n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(_column(count, total) > 0, total / _column(count, total), 0.0)
        m2 = _group_sums(self.m2 + weights * np.square(self.mean - mean[groups]), groups, n_groups)
        return Moments(count, mean, m2)

    def total(self) -> Moments:
        """Every group pooled into one."""
        return self.pooled(np.zeros(len(self), dtype=np.int64), 1)

    @property
    def std(self) -> np.ndarray:
        """The population standard deviation of each group's bins (ddof 0)."""
        return np.sqrt(self.m2 / np.maximum(_column(self.count, self.m2), 1.0))

    def arrays(self) -> dict[str, np.ndarray]:
        """The moments as the arrays ``count``, ``mean`` and ``m2`` of an HDF5 group."""
        return {name: getattr(self, name) for name in _FIELDS}

    def clip_arrays(self) -> dict[str, np.ndarray]:
        """:meth:`arrays` as a shard keeps its clips': mean and M2 in :data:`CLIP_MOMENTS_DTYPE`."""
        return {
            name: array if name == "count" else array.astype(CLIP_MOMENTS_DTYPE)
            for name, array in self.arrays().items()
        }

    @classmethod
    def read(cls, group: h5py.Group, rows: slice = slice(None)) -> Moments:
        """The moments (of ``rows`` only, if given) of a group holding them, in float64."""
        return cls(*(group[name][rows].astype(np.float64, copy=False) for name in _FIELDS))


_FIELDS = ("count", "mean", "m2")


def _group_sums(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Each group's sum of rows, added in row order like ``np.add.at``, without its per-row cost."""
    sums = np.zeros((n_groups, *values.shape[1:]))
    for group in np.unique(groups).tolist():
        sums[group] = values[groups == group].sum(axis=0)
    return sums


def _column(count: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``count`` shaped to broadcast against ``like`` along its first axis."""
    return count.reshape(-1, *([1] * (like.ndim - 1)))
