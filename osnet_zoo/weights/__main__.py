"""`python -m osnet_zoo.weights {list,download,convert,push,verify,mirror}`: the weights manifest, prefetching the
zoo into the cache, and Hub publishing."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from tqdm import tqdm

from .. import cli
from ..inference.export import export_model
from ..models.run_record import read_run_record
from ..models.osnet import pretrained_fit_problem
from . import cache
from .cache import PretrainedWeightsError, cache_root
from ..publish.convert import convert_checkpoint, plan_push, push_folder, record_conversion, record_publication
from .hub import fetch_pretrained, hf_cache_dir
from ..publish.mirror import mirror, record_reference_file
from ..publish.verify import verify_caches
from .manifest import (
    DATASET_NAMES, LOAD_SOURCES, MANIFEST_ENV, PACKAGED_MANIFEST, WeightsEntry, WeightsManifest, active_manifest_path,
    load_manifest,
)

EXAMPLES = '''examples:
  python -m osnet_zoo.weights list
  python -m osnet_zoo.weights download osnet_x1_0 osnet_ain_x1_0.market1501_to_dukemtmcreid
  python -m osnet_zoo.weights download --all && python -m osnet_zoo.weights mirror --output work/mirror
  python -m osnet_zoo.weights convert osnet_x1_0_market.pth --model osnet_x1_0 --tag market1501 \\
      --output out/osnet_x1_0.market1501
  python -m osnet_zoo.weights push out/osnet_x1_0.market1501 --dry-run
  python -m osnet_zoo.weights verify
  python -m osnet_zoo.weights verify --record ~/Downloads/osnet_ain_ms_d_c.pth.tar
  python -m osnet_zoo.weights mirror ~/Downloads/osnet_zoo --dry-run --output work/mirror

The manifest is osnet_zoo/weights/weights_manifest.json unless $OSNET_ZOO_MANIFEST or --manifest names another.'''


# each subcommand's --help examples
SUB_EXAMPLES = {
    'list': '''examples:
  python -m osnet_zoo.weights list
  python -m osnet_zoo.weights list --model osnet_ain_x1_0
  python -m osnet_zoo.weights list --markdown        # the README's zoo table''',
    'download': '''examples:
  python -m osnet_zoo.weights download osnet_x1_0 osnet_ain_x1_0.market1501_to_dukemtmcreid
  python -m osnet_zoo.weights download --all        # the whole zoo, e.g. for an offline cluster
  OSNET_ZOO_STRICT_WEIGHTS=1 python -m osnet_zoo.weights download --all   # only files the manifest pins''',
    'convert': '''examples:
  python -m osnet_zoo.weights convert osnet_x1_0_market.pth --model osnet_x1_0 --tag market1501 \\
      --output out/osnet_x1_0.market1501
  # one .pt for a tracker, in the reference key layout
  python -m osnet_zoo.weights convert osnet_x1_0_market.pth --to torchreid --model osnet_x1_0 \\
      --output out/osnet_x1_0_market.pt''',
    'push': '''examples:
  python -m osnet_zoo.weights push out/osnet_x1_0.market1501 --dry-run
  python -m osnet_zoo.weights push out/osnet_x1_0.market1501 --repo-id me/osnet_x1_0.market1501 --private''',
    'verify': '''examples:
  python -m osnet_zoo.weights verify
  python -m osnet_zoo.weights verify --record ~/Downloads/osnet_ain_ms_d_c.pth.tar''',
    'mirror': '''examples:
  python -m osnet_zoo.weights mirror ~/Downloads/osnet_zoo --dry-run --output work/mirror
  python -m osnet_zoo.weights mirror ~/Downloads/osnet_zoo --repo-prefix me --output work/mirror
  python -m osnet_zoo.weights mirror --dry-run --output work/mirror   # the originals `download` kept''',
}


def _manifest_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument('--manifest', type=Path, default=None,
                   help=f'weights manifest to use (default: ${MANIFEST_ENV} or the packaged one)')


def _load(args: argparse.Namespace) -> WeightsManifest:
    return load_manifest(args.manifest or active_manifest_path())


# ---------------------------------------------------------------------------------------------------- list

def _reported(entry: WeightsEntry, sep: str = '; ') -> str:
    """'Market1501 94.2 / 82.6; ...': reported Rank-1 / mAP per target, '-' where none is reported."""
    parts = []
    for ev in entry.evaluation:
        r1 = '-' if ev.rank1 is None else f'{ev.rank1:.1f}'
        mAP = '-' if ev.mAP is None else f'{ev.mAP:.1f}'
        parts.append(f'{DATASET_NAMES.get(ev.target, ev.target)} {r1} / {mAP}')
    return sep.join(parts) or '-'


def _loads_from(entry: WeightsEntry) -> str:
    source = entry.load_source
    if source == 'osnet-zoo':
        return f"hub {entry.hub['repo_id']}@{entry.hub['revision'][:7]} (sha256)"
    if source == 'hub':
        up = entry.upstream_file
        return f"hub {up.repo_id}@{up.revision[:7]}" + (' (sha256)' if up.sha256 else ' (no sha256)')
    if source == 'hub-unpinned':
        return 'hub, unpinned (first use)'
    if source == 'gdrive':
        return 'gdrive' + (' (sha256)' if entry.upstream.get('sha256') else ' (first use)')
    return '-'


def _trained_on(entry: WeightsEntry) -> str:
    return entry.training_description().replace(' (combineall: train + query + gallery)', ' (all)')


def cmd_list(args: argparse.Namespace) -> int:
    """``list``: print the manifest's entries (of ``--model`` only, if given) as a table, or with
    ``--markdown`` the README's zoo table."""
    manifest = _load(args)
    entries = [e for e in manifest if not args.model or e.architecture == args.model]
    if args.markdown:
        print(zoo_table(entries))
        return 0
    rows = []
    for e in entries:
        default = '*' if manifest.default_tags.get(e.architecture) == e.tag else ''
        rows.append([e.name + default, _trained_on(e), str(e.num_classes) if e.num_classes is not None else '?',
                     _reported(e), _loads_from(e)])
    print(f'weights manifest: {manifest.path} ({len(rows)} checkpoints; * = default tag of its architecture)\n')
    print(cli.format_table(rows, ['name', 'trained on', 'classes', 'reported R1 / mAP (%)', 'loads from']))
    counts = {s: sum(e.load_source == s for e in entries) for s in LOAD_SOURCES}
    print('\nloads from: ' + ', '.join(f'{n} {s}' for s, n in counts.items() if n) + '.')
    for source, text in LOAD_SOURCES.items():
        if counts[source]:
            print(f'  {source}: {text}')
    return 0


def zoo_table(entries: List[WeightsEntry]) -> str:
    """The README's zoo table (Markdown), generated from the manifest."""
    source = {'osnet-zoo': 'Hub (osnet-zoo)', 'hub': 'Hub (kaiyangzhou/osnet, pinned, sha256)',
              'hub-unpinned': 'Hub (kaiyangzhou/osnet, first use)', 'gdrive': 'Google Drive', 'none': '-'}
    defaults = load_manifest(PACKAGED_MANIFEST).default_tags
    lines = ['| Architecture | Tag | Training data | Reported Rank-1 / mAP (%) | Source |', '|---|---|---|---|---|']
    for e in entries:
        where = source[e.load_source]
        if e.load_source == 'gdrive':
            where += ' (sha256)' if e.upstream.get('sha256') else ' (first use)'
        tag = f'`{e.tag}`' + (' (default)' if defaults.get(e.architecture) == e.tag else '')
        lines.append(f'| `{e.architecture}` | {tag} | {_trained_on(e)} | {_reported(e, "<br>")} | {where} |')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------- download

def _tag_names(manifest: WeightsManifest, tags: List[str], every: bool) -> List[str]:
    if every:
        return [e.name for e in manifest]
    if not tags:
        raise ValueError('download needs TAG... or --all (see python -m osnet_zoo.weights download --help)')
    names = []
    for tag in tags:  # an architecture alone means its default tag, as in timm
        default = manifest.default_tags.get(tag)
        names.append(f'{tag}.{default}' if '.' not in tag and default else tag)
    for name in names:
        manifest.entry(name)  # a KeyError lists the known tags
    return names


def cmd_download(args: argparse.Namespace) -> int:
    """``download``: fetch, verify and convert tags into the osnet-zoo cache (for offline machines); prints a
    summary table. Returns 1 when any tag failed."""
    manifest = _load(args)
    names = _tag_names(manifest, args.tags, args.all)
    rows, failures = [], []
    interactive = sys.stderr.isatty()
    for name in tqdm(names, desc='downloading', unit='tag', disable=not interactive or len(names) == 1):
        entry = manifest.entry(name)
        sources = entry.download_sources()
        try:
            got = fetch_pretrained(entry, manifest, check=pretrained_fit_problem, quiet=not interactive)
        except (PretrainedWeightsError, OSError) as e:
            failures.append(f'{name}: {cli.error_message(e)}')
            rows.append([name, sources[0].kind if sources else '-', '-', 'failed'])
            continue
        status = got.status if got.downloaded else f'cached, {got.status}'
        rows.append([name, got.source.kind, got.sha256, status])
    print(cli.format_table(rows, ['tag', 'source', 'sha256 (as published)', 'status']))
    counts = {s: sum(r[3].endswith(s) for r in rows) for s in ('verified', 'pinned', 'first use', 'trusted',
                                                                 'failed')}
    print(f'\n{len(rows)} tags: ' + ', '.join(f'{n} {s}' for s, n in counts.items() if n)
          + f' (cache {cache_root()}; lock file {cache_root() / cache.LOCK_FILE}).')
    for line in failures:
        print(f'failed: {line}')
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------------- convert

def cmd_convert(args: argparse.Namespace) -> int:
    """``convert``: a checkpoint to a Hub folder (model.safetensors, config.json, model card), or with
    ``--to torchreid`` to a reference-layout .pt; ``--update-manifest`` records the digests."""
    if not args.model or not args.output:
        raise ValueError('convert needs --model ARCH and --output FOLDER '
                         '(see python -m osnet_zoo.weights convert --help)')
    if args.to == 'torchreid':
        return _convert_to_torchreid(args)
    if not args.tag:
        raise ValueError('convert --to hub needs --tag TAG (e.g. market1501, or any name for your own weights)')
    manifest = _load(args)
    result = convert_checkpoint(args.checkpoint, args.model, args.tag, Path(args.output), manifest=manifest,
                                check_size=args.check_size, **_recorded_training(args))
    for w in result.warnings:
        print(f'warning: {w}', file=sys.stderr)
    print(f'converted {result.source} -> {result.out_dir}')
    print(f'  forward check: embedding {tuple(result.embedding_shape)} and logits identical after reloading the '
          f'safetensors ({result.num_classes} classes)')
    print(f'  model.safetensors  sha256 {result.sha256}  size {result.size} bytes')
    print('  config.json, README.md (model card)')
    if args.update_manifest:
        written = record_conversion(manifest, result, path=args.manifest, force=args.force)
        print('  manifest updated: ' + ', '.join(str(p) for p in written))
    return 0


def _recorded_training(args: argparse.Namespace) -> dict:
    """How the weights were trained, from the run record beside ``args.checkpoint`` (a run's final/, its
    model.safetensors or the run folder; ``args.checkpoint`` then names the weights file): input size,
    mean / std, distance and architecture arguments go into the Hub folder as recorded, not the 256x128
    defaults. {} for a file without a record (a torchreid .pth)."""
    record = read_run_record(args.checkpoint)
    if record is None:
        return {}
    if record.architecture != args.model.split('.')[0]:
        raise ValueError(f'--model {args.model}: the run record {record.config} says the weights are a '
                         f'{record.architecture}; convert them with --model {record.architecture}.')
    args.checkpoint = record.weights
    return dict(input_size=record.input_hw, mean=record.preprocessing.get('mean'),
                std=record.preprocessing.get('std'), distance=record.distance, model_args=record.model_args or None)


def _convert_to_torchreid(args: argparse.Namespace) -> int:
    # the reference key layout that tracking libraries load, written and checked by the exporter
    contract = export_model(args.model, args.output, fmt='torchreid', pretrained=False,
                            checkpoint_path=str(args.checkpoint), with_classifier=not args.no_classifier)
    check = contract['check']
    print(f'converted {args.checkpoint} -> {args.output} (torchreid layout, model_name {args.model})')
    print(f"  reload check: {check['tensors_checked']} tensors bit-identical, embedding difference "
          f"{check['max_abs_diff']:g}")
    return 0


# ---------------------------------------------------------------------------------------------------- push

def cmd_push(args: argparse.Namespace) -> int:
    """``push``: upload a converted folder to the Hub (``--dry-run``: list the files only);
    ``--update-manifest`` records the pushed revision."""
    manifest = _load(args)
    plan = plan_push(args.folder, repo_id=args.repo_id, manifest=manifest)
    verb = 'would upload' if args.dry_run else 'uploading'
    print(f'{verb} {plan.name} to https://huggingface.co/{plan.repo_id} (branch {args.branch or "main"}):')
    for f in plan.files:
        print(f"  {f['path']:<18} {f['size']:>12,} bytes  sha256 {f['sha256']}")
    if args.dry_run:
        print('dry run: nothing uploaded.')
        return 0
    push_folder(plan, token=args.token, private=args.private, branch=args.branch)
    print(f'pushed: revision {plan.revision}')
    if args.update_manifest:
        weights = next(f for f in plan.files if f['path'] == 'model.safetensors')
        written = record_publication(manifest, plan.name, plan.repo_id, plan.revision, weights['sha256'],
                                     weights['size'], path=args.manifest)
        print('manifest updated: ' + ', '.join(str(p) for p in written))
    return 0


# ---------------------------------------------------------------------------------------------------- verify

def cmd_record(args: argparse.Namespace) -> int:
    """``verify --record``: identify each reference file and record its sha256 and size (and Hub revision)
    in its manifest entry."""
    manifest = _load(args)
    if args.tag and len(args.record) > 1:
        raise ValueError('--tag names the entry of one file; give one file with --tag')
    for path in args.record:
        ident, changes, manifest = record_reference_file(manifest, path, tag=args.tag, out=args.manifest)
        learnt = ', '.join(f'{k}={v}' for k, v in changes.items() if k != 'sources') or 'nothing new'
        print(f'{path}: {ident.entry.name} (identified by {ident.by}); recorded: {learnt}')
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """``verify``: re-hash the osnet-zoo cache and the Hugging Face cache's files of the manifest's repos
    (:func:`osnet_zoo.publish.verify.verify_caches`); ``--record`` records a reference file instead."""
    if args.record:
        return cmd_record(args)
    return verify_caches(_load(args), hf_cache_dir(args.cache_dir))


# ---------------------------------------------------------------------------------------------------- mirror

def cmd_mirror(args: argparse.Namespace) -> int:
    """``mirror``: convert, card and publish every reference file of a folder; returns 1 when any failed."""
    manifest = _load(args)
    workdir = Path(args.output)
    folder, files = args.folder, None
    if folder is None:  # what `download` fetched: the originals kept in the osnet-zoo cache
        folder, files = cache_root(), cache.cached_originals(cache_root())
        if not files:
            raise ValueError(f'mirror: no downloaded originals in the osnet-zoo cache {folder}; run `python -m '
                             'osnet_zoo.weights download --all` first (with OSNET_ZOO_KEEP_ORIGINALS unset), or '
                             'name a folder of reference files')
    report = mirror(folder, workdir, manifest, manifest_out=args.manifest, repo_prefix=args.repo_prefix,
                    dry_run=args.dry_run, token=args.token, files=files)
    total = len(report.done) + len(report.resumed)
    print(f'\n{total} tags finished ({len(report.done)} now, {len(report.resumed)} earlier), '
          f'{len(report.skipped)} files skipped, {len(report.failed)} failed; state: {workdir}/mirror_state.json.')
    if args.dry_run:
        print(f'dry run: nothing pushed; the digests it would record are in {workdir}/weights_manifest.dry-run.json.')
    return 1 if report.failed else 0


# ---------------------------------------------------------------------------------------------------- main

def _size(text: str) -> tuple:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected HEIGHTxWIDTH, e.g. 256x128, got {text!r}') from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f'the forward check needs at least 32x32 (5 stride-2 stages), got {text!r}')
    return h, w


def get_args_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m osnet_zoo.weights {list,download,convert,push,verify,mirror}``."""
    parser = cli.ArgumentParser(
        prog='python -m osnet_zoo.weights',
        description='OSNet pretrained weights: list the weights manifest, convert reference (torchreid) '
                    'checkpoints to Hub-ready safetensors, publish them, and verify cached files.',
        epilog=EXAMPLES)
    sub = parser.add_subparsers(dest='command', required=True, metavar='{list,download,convert,push,verify,mirror}')
    _add_list(sub)
    _add_download(sub)
    _add_convert(sub)
    _add_push(sub)
    _add_verify(sub)
    _add_mirror(sub)
    return parser


def _add_list(sub: argparse._SubParsersAction) -> None:
    """``list``: the manifest as a table."""
    p = sub.add_parser('list', epilog=SUB_EXAMPLES['list'],
                       help='print the weights manifest as a table')
    cli.add_model(p, default=None, help='only this architecture, e.g. osnet_x1_0')
    p.add_argument('--markdown', action='store_true', help="print the README's zoo table (Markdown) instead")
    _manifest_arg(p)
    p.set_defaults(func=cmd_list)


def _add_download(sub: argparse._SubParsersAction) -> None:
    """``download``: prefetch tags into the osnet-zoo cache."""
    p = sub.add_parser(
        'download', epilog=SUB_EXAMPLES['download'],
        help='prefetch tags into the osnet-zoo cache (verified, converted to safetensors)',
        description='Fetch each tag from its sources in order (our Hub mirror, the authors\' Hub file, Google Drive), '
                    'check it (sha256 where the manifest records it, else trust on first use: the lock file), '
                    'convert it once to safetensors in the osnet-zoo cache ($OSNET_ZOO_CACHE, default '
                    '~/.cache/osnet_zoo) and print a summary. Copy that cache to an offline machine to load '
                    'the tags there with no network. Exit status 1 if any tag failed.')
    p.add_argument('tags', nargs='*', metavar='TAG', help='ARCH.TAG, or ARCH for its default tag (see `list`)')
    p.add_argument('--all', action='store_true', help='every tag of the manifest')
    _manifest_arg(p)
    p.set_defaults(func=cmd_download)


def _add_convert(sub: argparse._SubParsersAction) -> None:
    """``convert``: a checkpoint to a Hub folder, or to one torchreid-layout file."""
    p = sub.add_parser(
        'convert', epilog=SUB_EXAMPLES['convert'],
        help='convert a checkpoint to model.safetensors + config.json + README.md',
        description='Read a checkpoint safely (torchreid classic or AIN layout, a trainer checkpoint '
                    "{'state_dict': ...} with module. prefixes, or safetensors), check it with a forward pass, and "
                    'write OUT/model.safetensors, OUT/config.json (for timm) and OUT/README.md (model card). '
                    'Prints the sha256 and size of the weights.')
    p.add_argument('checkpoint', type=Path, help='the checkpoint file (.pth, .pth.tar, .safetensors)')
    cli.add_model(p, default=None, help='architecture, e.g. osnet_x1_0 or osnet_ain_x1_0 (required)')
    p.add_argument('--tag', default=None,
                   help='pretrained tag, e.g. market1501 (see `list`); any name for your own (required for --to hub)')
    p.add_argument('--to', choices=['hub', 'torchreid'], default='hub',
                   help='hub: a folder with model.safetensors + config.json + model card (default); torchreid: one .pt '
                        'state dict in the reference key layout with a model_name entry, as tracking libraries load it')
    p.add_argument('--no-classifier', action='store_true', help='--to torchreid: leave the classifier out')
    cli.add_output(p, None, 'output folder, created if needed (required)')
    p.add_argument('--check-size', type=_size, default=None, metavar='HxW',
                   help="image size of the forward check (default: the model's input size, 256x128)")
    p.add_argument('--update-manifest', action='store_true',
                   help="record the weights' sha256 and size (and the class count if unknown) in the manifest")
    p.add_argument('--force', action='store_true',
                   help="with --update-manifest: record even if the checkpoint is not the manifest's reference file")
    _manifest_arg(p)
    p.set_defaults(func=cmd_convert)


def _add_push(sub: argparse._SubParsersAction) -> None:
    """``push``: upload a converted folder."""
    p = sub.add_parser(
        'push', epilog=SUB_EXAMPLES['push'],
        help='upload a converted folder to the Hugging Face Hub',
        description='Check a converted folder (the weights must load into the architecture of its config.json) '
                    'and upload model.safetensors, config.json and README.md in one commit. Needs a Hub token '
                    '(`hf auth login` or --token) unless --dry-run.')
    p.add_argument('folder', type=Path, help='a folder written by `convert`')
    p.add_argument('--repo-id', default=None, help="target repo (default: the manifest's, osnet-zoo/ARCH.TAG)")
    p.add_argument('--dry-run', action='store_true', help='list what would be uploaded; no network')
    p.add_argument('--branch', default=None, help='branch to commit to (default: main)')
    p.add_argument('--private', action='store_true', help='create the repo as private')
    p.add_argument('--token', default=None, help='Hub token (default: the logged-in one)')
    p.add_argument('--update-manifest', action='store_true', help="record the pushed commit as the entry's revision")
    _manifest_arg(p)
    p.set_defaults(func=cmd_push)


def _add_verify(sub: argparse._SubParsersAction) -> None:
    """``verify``: re-hash the caches, or record reference files."""
    p = sub.add_parser(
        'verify', epilog=SUB_EXAMPLES['verify'],
        help='re-hash the osnet-zoo cache and the Hugging Face cache against the manifest',
        description='Re-hash the osnet-zoo cache (each conversion against what it was written as, and its source '
                    'against the manifest\'s sha256 or the lock file\'s) and every cached weights file of the '
                    'manifest\'s Hub repos (against the recorded sha256 and size). Exit status 1 if any file '
                    'mismatches.')
    p.add_argument('--cache-dir', type=Path, default=None, help='Hugging Face cache (default: $HF_HUB_CACHE)')
    p.add_argument('--record', nargs='+', type=Path, metavar='FILE', default=None,
                   help="record the sha256 and size of these reference files (and the Hub revision of a file in "
                        "an HF cache snapshot) into their entries; a file is identified by its sha256, else by "
                        "name, class count and keys, and refused when it does not fit")
    p.add_argument('--tag', default=None, metavar='ARCH.TAG', help='with --record: the entry of the (one) file')
    _manifest_arg(p)
    p.set_defaults(func=cmd_verify)


def _add_mirror(sub: argparse._SubParsersAction) -> None:
    """``mirror``: convert, card and publish a folder of reference files."""
    p = sub.add_parser(
        'mirror', epilog=SUB_EXAMPLES['mirror'],
        help='convert, card and publish every reference file of a folder (the whole zoo)',
        description='DIR holds reference files as downloaded (any names). Each is identified by sha256, else by '
                    'name, class count and keys (ambiguous or unknown files are reported and skipped), its digests '
                    'recorded, converted into OUTPUT/ARCH.TAG (checked bit-identical), carded and, without '
                    '--dry-run, pushed to REPO_PREFIX/ARCH.TAG in one commit and recorded as published in the '
                    'manifest. OUTPUT/mirror_state.json records finished tags: rerun the same command after an '
                    'interruption to continue.')
    p.add_argument('folder', type=Path, nargs='?', default=None,
                   help='folder of downloaded reference files (default: the originals `download` kept in the '
                        'osnet-zoo cache)')
    p.add_argument('--dry-run', action='store_true', help='convert and check everything, push nothing, keep the '
                                                          'manifest (writes OUTPUT/weights_manifest.dry-run.json)')
    p.add_argument('--repo-prefix', default='osnet-zoo', help='Hub organisation or user (default: osnet-zoo)')
    cli.add_output(p, 'mirror-work', 'work folder: converted folders and the resume state')
    p.add_argument('--token', default=None, help='Hub token (default: the logged-in one)')
    _manifest_arg(p)
    p.set_defaults(func=cmd_mirror)


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``python -m osnet_zoo.weights``; returns the subcommand's exit status. A bad input raises (a
    CheckpointError, ManifestError, OSError ...): ``cli.run`` prints it as one ``error:`` line."""
    args = get_args_parser().parse_args(argv)
    return args.func(args)


if __name__ == '__main__':
    sys.exit(cli.run(main))
