"""The small benchmarks' multi-split protocols: which evaluations make one reported number, and the averaging.

VIPeR, GRID and CUHK01 are reported (Table 4 of both OSNet papers) as the mean over several random splits:
:func:`protocol_runs` lists the evaluations of a protocol as ``(split_id, options)`` pairs, to pass to
``build_dataset(name, root, split_id=split_id, **options)``; :func:`aggregate_runs` turns their results
into the mean (and standard deviation) of Rank-1/5/10 and mAP.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, NamedTuple, Sequence

import numpy as np

from .cuhk01 import CUHK01_NUM_SPLITS
from .viper import VIPER_DIRECTIONS, VIPER_NUM_SPLITS

__all__ = ['ProtocolRun', 'PROTOCOLS', 'protocol_runs', 'aggregate_runs', 'format_aggregate', 'PROTOCOL_METRICS']

GRID_NUM_SPLITS = 10  # the release's trainIdxAll holds 10 partitions
PROTOCOL_METRICS = ('rank1', 'rank5', 'rank10', 'mAP')


class ProtocolRun(NamedTuple):
    """One evaluation of a protocol: the split, and the other dataset options (VIPeR's direction)."""

    split_id: int
    options: Dict[str, Any]


PROTOCOLS: Dict[str, List[ProtocolRun]] = {
    # 10 splits x both directions (cam_a -> cam_b, cam_b -> cam_a): 20 evaluations
    'viper': [ProtocolRun(s, {'direction': d}) for s in range(VIPER_NUM_SPLITS) for d in VIPER_DIRECTIONS],
    'grid': [ProtocolRun(s, {}) for s in range(GRID_NUM_SPLITS)],
    'cuhk01': [ProtocolRun(s, {}) for s in range(CUHK01_NUM_SPLITS)],
}


def protocol_runs(name: str) -> List[ProtocolRun]:
    """The evaluations whose results are averaged for ``name`` (``'viper'``: 20, ``'grid'``, ``'cuhk01'``: 10)."""
    if name not in PROTOCOLS:
        raise KeyError(f'no multi-split protocol for dataset {name!r}; available: {sorted(PROTOCOLS)}')
    return [ProtocolRun(r.split_id, dict(r.options)) for r in PROTOCOLS[name]]


def _run_metrics(result: Mapping[str, Any], index: int) -> Dict[str, float]:
    if 'cmc' in result:  # an evaluate_rank / evaluate_features result
        cmc = np.asarray(result['cmc'], np.float64).ravel()
        if cmc.size < 10:
            raise ValueError(f'run {index}: its CMC has {cmc.size} ranks; Rank-10 needs max_rank >= 10')
        values = {'rank1': cmc[0], 'rank5': cmc[4], 'rank10': cmc[9], 'mAP': result.get('mAP')}
    else:
        values = {k: result.get(k) for k in PROTOCOL_METRICS}
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise ValueError(f'run {index}: result has no {missing[0]!r} (expected a dict with "cmc" and "mAP", '
                         f'or with {list(PROTOCOL_METRICS)})')
    return {k: float(v) for k, v in values.items()}


def aggregate_runs(results: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Mean and standard deviation over runs of Rank-1/5/10 and mAP (fractions in [0, 1], as given).

    Each result is a dict from :func:`osnet_zoo.metrics.evaluate_rank` / ``evaluate_features`` (``cmc``,
    ``mAP``) or one with ``rank1``, ``rank5``, ``rank10`` and ``mAP``. The standard deviation is the
    population one (``numpy.std``, ddof=0) across runs. Returns ``{'num_runs': n, 'rank1': {'mean': .,
    'std': .}, ...}``.
    """
    if not results:
        raise ValueError('aggregate_runs needs at least one run result')
    rows = [_run_metrics(r, i) for i, r in enumerate(results)]
    out: Dict[str, Any] = {'num_runs': len(rows)}
    for k in PROTOCOL_METRICS:
        v = np.array([row[k] for row in rows])
        out[k] = {'mean': float(v.mean()), 'std': float(v.std())}
    return out


def format_aggregate(aggregate: Mapping[str, Any]) -> str:
    """One line, in percent: ``Rank-1 45.2 ± 1.3  Rank-5 ...  mAP ...  (20 runs)``."""
    labels = {'rank1': 'Rank-1', 'rank5': 'Rank-5', 'rank10': 'Rank-10', 'mAP': 'mAP'}
    parts = [f'{labels[k]} {100 * aggregate[k]["mean"]:.1f} ± {100 * aggregate[k]["std"]:.1f}'
             for k in PROTOCOL_METRICS]
    return '  '.join(parts) + f'  ({aggregate["num_runs"]} runs)'
