"""`nas select`: choose among the seeds' searched placements by cross-domain performance.

The OSNet-AIN paper runs the search four times with different seeds and keeps "the one with the best
cross-domain performance". :func:`select` reads a finished multi-seed search (``OUT/config.json``,
``OUT/seed_<k>/genotype.json``), builds each seed's child as an ordinary ``OSNet`` with fresh weights, trains
it on the search's sources with the cross-domain recipe (``select_recipe`` of the search config, by default
``cross_domain_msmt17``: AMSGrad lr 0.0015, batch 64, cosine, 50 epochs, flip + colour jitter, cosine
distance), tests it on the targets, and keeps the child with the best mean mAP over the targets (mean rank-1
breaks a tie, then the lower seed). Seeds that found the same placement share one training.

Writes ``OUT/select/seed_<k>/`` (each training: checkpoint, metrics, ``result.json``), ``OUT/selection.json``,
``OUT/selection.md`` (the table of the seeds) and the kept ``OUT/genotype.json`` / ``OUT/probabilities.png``.
``resume`` keeps finished trainings.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from osnet_zoo import distributed as du
from osnet_zoo.files import atomic_write_json, atomic_write_text
from osnet_zoo.models import build_model_from_genotype, load_genotype, save_genotype
from osnet_zoo.engine import seed_everything
from osnet_zoo.engine.recipes import load_recipe

from .search import (Engine, check_search_config, cross_domain_eval, load_dataset, record_config, resolve_config,
                     train_network)

__all__ = ['RECIPE_KEYS', 'selection_config', 'select', 'selection_markdown']

# What the selection takes from the training recipe; data, input size, width and sources stay the search's.
RECIPE_KEYS = ('epochs', 'batch_size', 'optim', 'lr', 'momentum', 'weight_decay', 'lr_scheduler', 'transforms',
               'label_smooth', 'distance')
TRAIN_SEED = 1  # every child starts from the same RNG state: only the placement differs between them


def _search_config(out: Path) -> Dict[str, Any]:
    path = out / 'config.json'
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: `nas select --output {out}` reads a search folder; run '
                                f'`python -m osnet_zoo.nas search --output {out} --seeds 1 2 3 4` first.')
    try:
        cfg = json.loads(path.read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f'{path} is not valid JSON ({e}).') from None
    if not isinstance(cfg, dict):
        raise ValueError(f'{path} holds a {type(cfg).__name__}, not the config of a `nas search` run.')
    missing = [k for k in ('seeds', 'sources', 'targets', 'select_recipe', 'model_width') if k not in cfg]
    if missing:
        raise ValueError(f'{path} is not the config of a `nas search` run (no {", ".join(missing)}); '
                         'search again with this version, or give the search folder.')
    for k in ('world_size', 'batch_size_per_rank'):  # recorded facts of the search's run, not options
        cfg.pop(k, None)
    try:
        check_search_config(cfg)
    except ValueError as e:
        raise ValueError(f'{path}: {e} The file is damaged or was edited.') from None
    return cfg


def _read_result(path: Path) -> Dict[str, Any]:
    """A finished child's ``result.json`` (what :func:`select` wrote), or a ValueError naming the file and the
    damage: delete it and the child is trained again."""
    try:
        row = json.loads(path.read_text(encoding='utf-8'))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        row, why = None, f'not valid JSON ({e})'
    else:
        why = f'a {type(row).__name__}, not a mapping'
    if isinstance(row, dict):
        results = row.get('results')
        scored = isinstance(results, dict) and results and all(
            isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) for k in ('rank1', 'mAP'))
            for r in results.values())
        why = None if scored and isinstance(row.get('seed'), int) and isinstance(row.get('block_norms'), list) \
            else "no seed, block_norms or results (rank1 and mAP per target)"
    if why is not None:
        raise ValueError(f'{path} is damaged: {why}; delete it to train that child again.')
    return row


def selection_config(search_cfg: Dict[str, Any], recipe: Optional[str] = None, **overrides: Any) -> Dict[str, Any]:
    """The training config of the selection: the search's data and model settings, the optimisation of
    ``recipe`` (default: the search's ``select_recipe``), then ``overrides`` that are not None."""
    name = recipe or search_cfg['select_recipe']
    values = load_recipe(name)
    cfg = dict(search_cfg, **{k: values[k] for k in RECIPE_KEYS if k in values}, select_recipe=name)
    return resolve_config(cfg, **overrides)


def _score(row: Dict[str, Any], targets: Sequence[str]) -> Tuple[float, float, int]:
    res = row['results']
    return (sum(res[t]['mAP'] for t in targets) / len(targets),
            sum(res[t]['rank1'] for t in targets) / len(targets), -row['seed'])


def select(out: Path, engine: Engine, recipe: Optional[str] = None, train_cfg: Optional[Dict[str, Any]] = None,
           extra_eval: Sequence[str] = (), **overrides: Any) -> Dict[str, Any]:
    """Train every seed's child of the search in ``out`` and keep the best on the targets (see the module).

    ``train_cfg`` replaces the recipe-based config entirely (the proof trains the children with its own
    recipe); ``extra_eval`` are datasets also evaluated (reported, not used to choose). Returns what
    ``selection.json`` holds, with the kept genotype under ``'genotype'``.
    """
    out = Path(out)
    search_cfg = _search_config(out)
    cfg = train_cfg if train_cfg is not None else selection_config(search_cfg, recipe, **overrides)
    targets = list(cfg['targets'])
    if not targets:
        raise ValueError('the selection needs target datasets (--targets): the seeds are compared on domains the '
                         'search did not train on.')
    genotypes = []
    for s in search_cfg['seeds']:
        path = out / f'seed_{s}' / 'genotype.json'
        if not path.is_file():
            raise FileNotFoundError(f'{path} not found: the search of seed {s} has not finished; run '
                                    f'`python -m osnet_zoo.nas search --output {out} --resume` first.')
        genotypes.append(load_genotype(path))
    num_classes = load_dataset(cfg['sources'], cfg, cfg['combineall']).num_train_pids
    rows: List[Dict[str, Any]] = []
    trained: Dict[tuple, Dict[str, Any]] = {}
    for g in genotypes:
        seed, key = g['seed'], (tuple(g['block_norms']), g.get('conv1_in', True))
        if key in trained:  # same placement as an earlier seed: same training, same result
            rows.append(dict(trained[key], seed=seed, same_as=trained[key]['seed']))
            continue
        folder = out / 'select' / f'seed_{seed}'
        result = folder / 'result.json'
        row = _read_result(result) if engine.resume and result.is_file() else None
        if row is None or row.get('epochs') != cfg['epochs']:
            record_config(cfg, folder / 'config.json')
            seed_everything(TRAIN_SEED)
            model = build_model_from_genotype(g, width=cfg['model_width'], num_classes=num_classes)
            stats = train_network(model, cfg, folder, TRAIN_SEED, engine, desc=f'select: seed {seed} child')
            model.eval()
            res = cross_domain_eval(model, list(dict.fromkeys(targets + list(extra_eval))), cfg, engine,
                                    cfg['epochs'])
            row = dict(seed=seed, block_norms=list(g['block_norms']), conv1_in=g.get('conv1_in', True),
                       epochs=cfg['epochs'], train_seconds=round(stats['seconds'], 1),
                       params=sum(p.numel() for n, p in model.named_parameters() if not n.startswith('classifier')),
                       results={t: dict(rank1=r['rank1'], mAP=r['mAP']) for t, r in res.items()}
                       if du.is_main_process() else {})
            if du.is_main_process():
                atomic_write_json(result, row)
            row = du.broadcast_object(row)
        trained[key] = row
        rows.append(row)
    best = max(rows, key=lambda r: _score(r, targets))
    kept = next(g for g in genotypes if g['seed'] == best['seed'])
    summary = dict(
        kept_seed=best['seed'], block_norms=best['block_norms'], targets=targets,
        rule='best mean mAP over the targets (then mean rank-1, then the lower seed)',
        recipe=cfg.get('select_recipe'), sources=cfg['sources'],
        train={k: cfg[k] for k in RECIPE_KEYS}, world_size=du.get_world_size(),
        seeds=[dict(r, mean_mAP=_score(r, targets)[0], mean_rank1=_score(r, targets)[1]) for r in rows])
    genotype = dict(kept, name=f"selected_seed{best['seed']}",
                    selection=dict(kept_seed=best['seed'], targets=targets, recipe=summary['recipe'],
                                   results=best['results']))
    if du.is_main_process():
        atomic_write_json(out / 'selection.json', summary)
        atomic_write_text(out / 'selection.md', selection_markdown(summary))
        save_genotype(genotype, out / 'genotype.json')
        shutil.copyfile(out / f"seed_{best['seed']}" / 'probabilities.png', out / 'probabilities.png')
    du.barrier()
    return dict(summary, genotype=genotype)


def selection_markdown(summary: Dict[str, Any]) -> str:
    """The seeds' placements and their cross-domain results as a markdown table (the kept one marked)."""
    targets = summary['targets']
    t = summary['train']
    lines = [
        f"Selection among {len(summary['seeds'])} seeds: each child trained on {'+'.join(summary['sources'])} "
        f"(recipe {summary['recipe']}: {t['optim']} lr {t['lr']}, batch {t['batch_size']}, {t['epochs']} epochs), "
        f"tested on {', '.join(targets)}; kept: seed {summary['kept_seed']} "
        f"(`{'/'.join(summary['block_norms'])}`), {summary['rule']}.",
        '',
        '| seed | block norms (conv2-4) | ' + ' | '.join(f'{x} R1 | {x} mAP' for x in targets) + ' | mean mAP | kept |',
        '|---|---|' + '---|---|' * len(targets) + '---|---|',
    ]
    for r in summary['seeds']:
        cells = ' | '.join(f"{100 * r['results'][x]['rank1']:.1f} | {100 * r['results'][x]['mAP']:.1f}"
                           for x in targets)
        same = f" (= seed {r['same_as']})" if r.get('same_as') else ''
        lines.append(f"| {r['seed']}{same} | {'/'.join(r['block_norms'])} | {cells} | {100 * r['mean_mAP']:.1f} | "
                     f"{'yes' if r['seed'] == summary['kept_seed'] else ''} |")
    return '\n'.join(lines) + '\n'
