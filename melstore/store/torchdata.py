"""PyTorch access to a store. Importing this module needs torch (an optional dependency)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

if TYPE_CHECKING:
    from melstore.store.reader import Store


class ClipDataset(Dataset):
    """A map-style dataset over rows of a store: item ``i`` is (features, target).

    Made by :meth:`melstore.store.reader.Store.to_torch_dataset`. The file is opened
    lazily in each process, because an h5py handle must not cross a fork into
    ``DataLoader`` workers.

    Parameters
    ----------
    open_store : callable
        Opens the store read-only (picklable, for spawned workers).
    rows : np.ndarray
        Feature rows of the clips, in item order.
    targets : np.ndarray
        int64 target of each item.
    normaliser : (np.ndarray, np.ndarray), optional
        ``(mean, scale)``: each clip becomes ``(x - mean) / scale``.
    transform : callable, optional
        Applied to each clip's features tensor.
    """

    def __init__(
        self,
        open_store: Callable[[], Store],
        rows: np.ndarray,
        targets: np.ndarray,
        *,
        normaliser: tuple[np.ndarray, np.ndarray] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.open_store, self.rows, self.targets = open_store, rows, targets
        self.normaliser = normaliser
        self.transform = transform
        self._store: Store | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        values = self._open().clip(int(self.rows[index]))
        if self.normaliser is not None:
            mean, scale = self.normaliser
            values = (values - mean) / scale
        features = torch.from_numpy(values)
        if self.transform is not None:
            features = self.transform(features)
        return features, torch.tensor(self.targets[index], dtype=torch.int64)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_store": None, "_pid": None}

    def _open(self) -> Store:
        if self._pid != os.getpid():
            self._store, self._pid = self.open_store(), os.getpid()
        return self._store
