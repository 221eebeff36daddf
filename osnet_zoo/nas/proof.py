"""A mini Table 7 of the OSNet-AIN paper on synthetic data: does the searched IN placement generalise?

1. Generate a source domain A (``synthetic``) and a target domain B (``synthetic_b``: cameras drawn from
   another style distribution), sized by ``train_ids`` / ``test_ids``.
2. Search on A once per seed (``search_epochs``; temperature halved every ``search_epochs / 6`` epochs, as
   20 of 120).
3. With several seeds, select as the paper does: train each seed's child on A and keep the best mAP on B.
4. Train plain OSNet, OSNet-IBN and the published OSNet-AIN placement on A with the same recipe, budget
   (``train_epochs``) and seed as the children.
5. Evaluate all four on B's query/gallery (cross-domain) and on A's (same domain).

Writes ``OUT/proof.json`` and ``OUT/proof.md`` (a markdown table ready for benchmarks/RESULTS.md), the
genotype and the probabilities plot of the search.
"""
from __future__ import annotations

import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from osnet_zoo import distributed as du
from osnet_zoo.files import atomic_write_json, atomic_write_text
from osnet_zoo.models.osnet import IBN_BLOCK_NORMS, PLAIN_BLOCK_NORMS

from osnet_zoo.engine import seed_everything

from ..models import build_model_from_genotype, load_genotype
from .search import PAPER_CONFIG, Engine, cross_domain_eval, load_dataset, resolve_config, search, train_network
from .select import TRAIN_SEED, select

__all__ = ['run_proof']


def _baselines(searched: Dict[str, Any]) -> List[Dict[str, Any]]:
    ain = load_genotype('osnet_ain')
    return [
        dict(name='OSNet', block_norms=list(PLAIN_BLOCK_NORMS), conv1_in=False),
        dict(name='OSNet-IBN', block_norms=list(IBN_BLOCK_NORMS), conv1_in=True),
        dict(name='OSNet-AIN (published placement)', block_norms=ain['block_norms'], conv1_in=True),
        dict(name='OSNet-AIN (searched here)', block_norms=searched['block_norms'],
             conv1_in=searched.get('conv1_in', True)),
    ]


def _selected_row(selection: Dict[str, Any]) -> Dict[str, Any]:
    """The table row of the child that the selection kept, from its training in the selection."""
    kept = next(r for r in selection['seeds'] if r['seed'] == selection['kept_seed'])
    res = kept['results']
    return dict(name='OSNet-AIN (searched here)', block_norms=kept['block_norms'], conv1_in=kept['conv1_in'],
                params=kept['params'], train_seconds=kept['train_seconds'],
                cross_rank1=res['synthetic_b']['rank1'], cross_mAP=res['synthetic_b']['mAP'],
                same_rank1=res['synthetic']['rank1'], same_mAP=res['synthetic']['mAP'])


def _train_models(specs: List[Dict[str, Any]], trained: Dict[tuple, Dict[str, Any]], train_cfg: Dict[str, Any],
                  out: Path, engine: Engine) -> List[Dict[str, Any]]:
    """Train each architecture of ``specs`` with the same recipe and seed (one already ``trained``, keyed by
    block norms and conv1 IN, is not trained again) and test it on both domains; the table's rows."""
    num_classes = load_dataset(['synthetic'], train_cfg).num_train_pids
    rows: List[Dict[str, Any]] = []
    for spec in specs:
        key = (tuple(spec['block_norms']), spec['conv1_in'])
        if key in trained:  # an architecture already trained: same seed and recipe, same result
            row = dict(trained[key], name=spec['name'])
            if trained[key]['name'] != spec['name']:
                row['same_as'] = trained[key]['name']
            rows.append(row)
            continue
        seed_everything(TRAIN_SEED)  # the children of the selection start from the same RNG state
        model = build_model_from_genotype(dict(format='osnet_zoo.nas.genotype', **spec),
                                          width=train_cfg['model_width'], num_classes=num_classes)
        folder = out / ('train_' + spec['name'].split(' (')[0].lower().replace('-', '_')
                        + ('_searched' if 'searched' in spec['name'] else ''))
        t0 = time.time()
        train_network(model, train_cfg, folder, seed=TRAIN_SEED, engine=engine, desc=spec['name'])
        seconds = time.time() - t0
        model.eval()
        res = cross_domain_eval(model, ['synthetic_b', 'synthetic'], train_cfg, engine, train_cfg['epochs'])
        row = dict(spec, params=sum(p.numel() for n, p in model.named_parameters() if not n.startswith('classifier')),
                   train_seconds=round(seconds, 1))
        if du.is_main_process():
            row.update(cross_rank1=res['synthetic_b']['rank1'], cross_mAP=res['synthetic_b']['mAP'],
                       same_rank1=res['synthetic']['rank1'], same_mAP=res['synthetic']['mAP'])
        trained[key] = row
        rows.append(row)
    return rows


def run_proof(out: Path, engine: Engine, train_ids: int = 400, test_ids: int = 100,
              search_epochs: int = 30, train_epochs: int = 30, batch_size: int = 128, lr: float = 0.1,
              model_width: float = 1.0, height: int = 128, width: int = 64, seeds: Optional[List[int]] = None,
              mode: str = 'all', max_steps_per_epoch: int = 0) -> Dict[str, Any]:
    """Run the mini Table 7 into ``out``; returns what ``proof.json`` holds."""
    out = Path(out)
    t_start = time.time()
    seeds = seeds or [1, 2, 3, 4]
    options = dict(num_train_ids=train_ids, num_test_ids=test_ids, height=height, width=width)
    common = dict(root=str(out / 'data'), dataset_options=options, height=height, width=width,
                  model_width=model_width, batch_size=batch_size, lr=lr, mode=mode,
                  max_steps_per_epoch=max_steps_per_epoch, sources=['synthetic'], combineall=False)
    search_cfg = resolve_config(
        PAPER_CONFIG, **common, epochs=search_epochs, tau_halve_every=max(1, round(search_epochs / 6)), seeds=seeds,
        targets=['synthetic_b'], select=False)  # the selection below trains with this proof's recipe
    t0 = time.time()
    for name in ('synthetic', 'synthetic_b'):  # generate both domains up front (timed apart from the search)
        load_dataset([name], search_cfg)
    data_seconds = time.time() - t0
    t0 = time.time()
    found = search(search_cfg, out / 'search', engine)
    search_seconds = time.time() - t0

    train_cfg = resolve_config(PAPER_CONFIG, **common, epochs=train_epochs, targets=['synthetic_b'],
                               select_recipe='the proof\'s (as the baselines)')
    trained: Dict[tuple, Dict[str, Any]] = {}
    selection = None
    genotype = found[0]
    if len(found) > 1:
        t0 = time.time()
        selection = select(out / 'search', engine, train_cfg=train_cfg, extra_eval=['synthetic'])
        genotype = selection['genotype']
        # the selected child is trained already (its results are on every rank): its row is that training
        row = _selected_row(selection)
        trained[(tuple(row['block_norms']), row['conv1_in'])] = row
        selection_seconds = time.time() - t0
    rows = _train_models(_baselines(genotype), trained, train_cfg, out, engine)
    device_name = torch.cuda.get_device_name(engine.device) if engine.device.type == 'cuda' else platform.processor()
    result = dict(
        date=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), device=device_name or engine.device.type,
        world_size=du.get_world_size(), precision=engine.precision, channels_last=engine.channels_last,
        data=dict(options, source='synthetic (domain A)', target='synthetic_b (domain B)'),
        search=dict(epochs=search_epochs, seeds=seeds, mode=mode, seconds=round(search_seconds, 1),
                    genotype=genotype['block_norms'], probabilities=genotype['probabilities'],
                    found=[dict(seed=g['seed'], block_norms=g['block_norms']) for g in found],
                    is_published_ain=list(genotype['block_norms']) == list(load_genotype('osnet_ain')['block_norms'])),
        selection=None if selection is None else dict(
            kept_seed=selection['kept_seed'], seconds=round(selection_seconds, 1), seeds=[
                dict(seed=r['seed'], block_norms=r['block_norms'], cross_mAP=r['results']['synthetic_b']['mAP'],
                     cross_rank1=r['results']['synthetic_b']['rank1']) for r in selection['seeds']]),
        train=dict(epochs=train_epochs, batch_size=batch_size, lr=lr, model_width=model_width),
        data_seconds=round(data_seconds, 1), total_seconds=round(time.time() - t_start, 1), models=rows)
    if du.is_main_process():
        atomic_write_json(out / 'proof.json', result)
        atomic_write_text(out / 'proof.md', proof_markdown(result))
        print(proof_markdown(result))
    return result


def proof_markdown(result: Dict[str, Any]) -> str:
    """The proof as a markdown table with the settings that produced it."""
    s = result['search']
    lines = [
        f"Mini Table 7 (synthetic A -> B), {result['date']}, {result['device']}, "
        f"precision {result.get('precision', result.get('amp'))}: "
        f"search {s['epochs']} epochs x {len(s['seeds'])} seed(s) in {s['seconds']} s "
        f"(mode {s['mode']}) found `{'/'.join(s['genotype'])}`; each model trained {result['train']['epochs']} "
        f"epochs (width {result['train']['model_width']}, batch {result['train']['batch_size']}, "
        f"lr {result['train']['lr']}); total {result['total_seconds']} s.",
        '',
    ]
    for f in s.get('found', []):
        sel = result.get('selection') or {}
        row = next((r for r in sel.get('seeds', []) if r['seed'] == f['seed']), None)
        lines.append(f"- seed {f['seed']}: `{'/'.join(f['block_norms'])}`"
                     + (f" (trained child: A->B mAP {100 * row['cross_mAP']:.1f})" if row else '')
                     + (' **kept**' if sel.get('kept_seed') == f['seed'] else ''))
    if 'is_published_ain' in s:
        lines.append(f"- the selected placement {'IS' if s['is_published_ain'] else 'is NOT'} the published "
                     f"OSNet-AIN one (`{'/'.join(load_genotype('osnet_ain')['block_norms'])}`)")
    lines += [
        '',
        '| model | block norms (conv2-4) | conv1 IN | params | A->B R1 | A->B mAP | A->A R1 | A->A mAP |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for r in result['models']:
        lines.append(
            f"| {r['name']} | {'/'.join(r['block_norms'])} | {'yes' if r['conv1_in'] else 'no'} | {r['params']:,} | "
            f"{100 * r['cross_rank1']:.1f} | {100 * r['cross_mAP']:.1f} | {100 * r['same_rank1']:.1f} | "
            f"{100 * r['same_mAP']:.1f} |")
    return '\n'.join(lines) + '\n'
