"""Who matches whom: for every query, its true matches and its junk in the gallery (Market1501 protocol), the
lists both the CMC / mAP kernel (``rank``) and the CUHK03 single-gallery-shot CMC (``cuhk03``) read."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

__all__ = ['MatchLists']


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + n)`` for each (s, n), vectorised."""
    lengths = lengths.astype(np.int64, copy=False)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(starts.astype(np.int64) - offsets, lengths) + np.arange(total, dtype=np.int64)


@dataclass
class MatchLists:
    """For every query, its true matches (same identity, other camera) and its junk (same identity, same
    camera) in the gallery, as CSR lists of gallery indices. Built once by grouping the gallery by identity."""

    good_ptr: np.ndarray
    good_idx: np.ndarray
    junk_ptr: np.ndarray
    junk_idx: np.ndarray

    @classmethod
    def build(cls, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray
              ) -> 'MatchLists':
        """The lists of every query from the query and gallery identity and camera ids: the gallery is
        sorted on (identity, camera) once and each query's ranges found by binary search."""
        pid_values, pid_codes = np.unique(np.concatenate([q_pids, g_pids]), return_inverse=True)
        cam_values, cam_codes = np.unique(np.concatenate([q_camids, g_camids]), return_inverse=True)
        num_q, num_cams = len(q_pids), max(1, len(cam_values))
        key = pid_codes.astype(np.int64) * num_cams + cam_codes
        q_pid, q_key, g_key = pid_codes[:num_q].astype(np.int64), key[:num_q], key[num_q:]
        order = np.argsort(g_key, kind='stable')
        sorted_key = g_key[order]
        pid_lo = np.searchsorted(sorted_key, q_pid * num_cams, 'left')
        pid_hi = np.searchsorted(sorted_key, (q_pid + 1) * num_cams, 'left')
        cam_lo = np.searchsorted(sorted_key, q_key, 'left')
        cam_hi = np.searchsorted(sorted_key, q_key, 'right')
        # true matches: the identity's range minus its same-camera sub-range (two pieces per query)
        starts = np.stack([pid_lo, cam_hi], 1).ravel()
        lengths = np.stack([cam_lo - pid_lo, pid_hi - cam_hi], 1).ravel()
        good_counts = (cam_lo - pid_lo) + (pid_hi - cam_hi)
        junk_counts = cam_hi - cam_lo
        return cls(
            good_ptr=np.concatenate([[0], np.cumsum(good_counts)]).astype(np.int64),
            good_idx=order[_ranges(starts, lengths)],
            junk_ptr=np.concatenate([[0], np.cumsum(junk_counts)]).astype(np.int64),
            junk_idx=order[_ranges(cam_lo, junk_counts)],
        )

    @property
    def num_good(self) -> np.ndarray:
        """The number of true matches of each query, (num_queries,)."""
        return np.diff(self.good_ptr)

    def rows(self, start: int, stop: int, junk: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """(local row, gallery index) of every true match (or junk entry) of queries start..stop-1."""
        ptr, idx = (self.junk_ptr, self.junk_idx) if junk else (self.good_ptr, self.good_idx)
        cols = idx[ptr[start]:ptr[stop]]
        local = np.repeat(np.arange(stop - start, dtype=np.int64), np.diff(ptr[start:stop + 1]))
        return local, cols
