"""weights_manifest.json: the one record of every OSNet checkpoint, upstream and ours, and the timm cfgs
generated from it.

The manifest ships inside the package (``osnet_zoo/weights/weights_manifest.json``; the repository root
holds a byte-identical copy for readers). timm's pretrained cfgs are generated from it (``pretrained_cfgs``),
and every loaded file is checked against its sha256. ``OSNET_ZOO_MANIFEST=/path/to/manifest.json`` makes
another manifest the active one for loading and for the ``python -m osnet_zoo.weights`` commands (for
example one that records your own converted weights); the timm registry itself always comes from the
packaged manifest.

Each entry is one checkpoint: ``architecture``.``tag``. A fact is filled only where a readable source
states it (``sources`` says which); unknown facts are ``null``. ``WeightsEntry.download_sources`` orders
where a tag is downloaded from: our safetensors conversion (``hub``) once both its revision and sha256 are
recorded (``published``), the authors' Hub file (at its recorded revision, or unpinned), Google Drive; a
source's bytes are checked against the sha256 recorded here, else trusted on first use (``cache.py``). This
module imports nothing from ``osnet_zoo.models``: ``models/osnet.py`` builds its ``default_cfgs`` from it.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

from ..files import atomic_write_text

__all__ = [
    'PACKAGED_MANIFEST', 'MANIFEST_SCHEMA', 'ManifestError', 'HubFile', 'Evaluation', 'WeightsEntry',
    'WeightsManifest', 'load_manifest', 'active_manifest_path', 'validate_manifest_schema', 'dumps_manifest',
    'write_manifest', 'repo_root_copy', 'pretrained_cfgs', 'gdrive_url', 'LOAD_SOURCES', 'WeightsSource',
]

PACKAGED_MANIFEST = Path(__file__).with_name('weights_manifest.json')
MANIFEST_SCHEMA = Path(__file__).with_name('weights_manifest.schema.json')
MANIFEST_ENV = 'OSNET_ZOO_MANIFEST'
UPSTREAM_HUB_REPO = 'kaiyangzhou/osnet'
_SHA256 = re.compile(r'^[0-9a-f]{64}$')


class ManifestError(ValueError):
    """A manifest that is missing, unreadable, or does not follow the schema."""


@dataclass(frozen=True)
class HubFile:
    """One weights file on the Hugging Face Hub, with what the manifest knows about it."""
    repo_id: str
    filename: str
    revision: Optional[str] = None  # None: the repo's default branch
    sha256: Optional[str] = None
    size: Optional[int] = None
    kind: str = 'osnet-zoo'  # 'osnet-zoo' (our safetensors), 'upstream' (the reference file), 'other'

    @property
    def pinned(self) -> bool:
        """May supply weights for a tag: ours needs a revision and a sha256, the authors' file a revision."""
        if self.kind == 'osnet-zoo':
            return self.revision is not None and self.sha256 is not None
        return self.revision is not None

    def describe(self) -> str:
        """``repo_id@revision/filename`` (no ``@revision`` when there is none), for messages."""
        rev = f'@{self.revision}' if self.revision else ''
        return f'{self.repo_id}{rev}/{self.filename}'


@dataclass(frozen=True)
class WeightsSource:
    """One place a tag's file may be downloaded from, with what the manifest records about its bytes.

    ``kind``: 'osnet-zoo' (our published safetensors), 'hub' (the authors' Hub file at a recorded revision),
    'hub-unpinned' (the authors' Hub file, no revision recorded) or 'gdrive' (the authors' Google Drive file).
    """
    kind: str
    file: Optional[HubFile] = None  # the Hub kinds
    gdrive_id: Optional[str] = None  # 'gdrive'
    filename: Optional[str] = None
    sha256: Optional[str] = None
    size: Optional[int] = None

    @property
    def pinned(self) -> bool:
        """Its bytes are fixed by the manifest (a Hub revision, or a recorded sha256): what strict mode allows.
        An unpinned source is trusted on first use (the lock file of the cache)."""
        return self.kind in ('osnet-zoo', 'hub') or self.sha256 is not None

    def describe(self) -> str:
        """``repo@revision/filename`` for the Hub, the Drive link for Google Drive, for messages."""
        return self.file.describe() if self.file is not None else gdrive_url(self.gdrive_id or '')


@dataclass(frozen=True)
class Evaluation:
    """Reported re-ID results on one evaluation target (null: not known from a readable source)."""
    target: str
    rank1: Optional[float] = None
    rank5: Optional[float] = None
    rank10: Optional[float] = None
    mAP: Optional[float] = None
    source: Optional[str] = None


@dataclass(frozen=True)
class WeightsEntry:
    """One checkpoint of the zoo (see the module docstring)."""
    architecture: str
    tag: str
    task: str
    training_data: Tuple[str, ...]
    training_data_text: Optional[str]
    combineall: Optional[bool]
    num_classes: Optional[int]
    input_size: Optional[Tuple[int, int, int]]
    mean: Optional[Tuple[float, ...]]
    std: Optional[Tuple[float, ...]]
    transforms: Optional[Tuple[str, ...]]
    distance: Optional[str]
    loss: Optional[str]
    evaluation: Tuple[Evaluation, ...]
    upstream: Dict[str, Any]
    hub: Dict[str, Any]
    base_model: Optional[str]
    license: Optional[str]
    notes: Optional[str]
    sources: Dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``architecture.tag``, the entry's key."""
        return f'{self.architecture}.{self.tag}'

    @property
    def published(self) -> bool:
        """Our safetensors conversion is on the Hub at a recorded revision with a recorded sha256."""
        return self.hub.get('revision') is not None and self.hub.get('sha256') is not None

    @property
    def ours(self) -> HubFile:
        """Our safetensors conversion on the Hub, as the entry's ``hub`` records it (pinned or not)."""
        return HubFile(self.hub['repo_id'], self.hub['filename'], self.hub.get('revision'), self.hub.get('sha256'),
                       self.hub.get('size'), kind='osnet-zoo')

    @property
    def upstream_file(self) -> Optional[HubFile]:
        """The reference file on the Hub, where its repo and name are known."""
        up = self.upstream
        if not (up.get('hf_hub_id') and up.get('filename')):
            return None
        return HubFile(up['hf_hub_id'], up['filename'], up.get('hf_revision'), up.get('sha256'), up.get('size'),
                       kind='upstream')

    @property
    def gdrive_url(self) -> Optional[str]:
        """The Google Drive link of the reference file, where its id is known."""
        return gdrive_url(self.upstream['gdrive_id']) if self.upstream.get('gdrive_id') else None

    def locations(self) -> List[HubFile]:
        """The pinned locations that may supply this checkpoint, best first: our published safetensors, then
        the authors' file on the Hub at its recorded revision. Nothing else ever does: an unpinned repo
        (ours before publication, or the authors' file without a recorded revision) could serve any bytes."""
        return [loc for loc in (self.ours, self.upstream_file) if loc is not None and loc.pinned]

    def download_sources(self) -> List[WeightsSource]:
        """Where ``pretrained=True`` may download this checkpoint from, in order (the one function that decides):
        our published safetensors; the authors' Hub file at its recorded revision; the authors' Hub file without
        a recorded revision (trusted on first use); the authors' Google Drive file (sha256-checked where
        recorded, else trusted on first use)."""
        up = self.upstream
        out = []
        if self.published:
            out.append(WeightsSource('osnet-zoo', file=self.ours, filename=self.ours.filename, sha256=self.ours.sha256,
                                     size=self.ours.size))
        ref = self.upstream_file
        if ref is not None:
            out.append(WeightsSource('hub' if ref.pinned else 'hub-unpinned', file=ref, filename=ref.filename,
                                     sha256=ref.sha256, size=ref.size))
        if up.get('gdrive_id'):
            out.append(WeightsSource('gdrive', gdrive_id=up['gdrive_id'], filename=up.get('filename') or
                                     f'{self.name}.pth', sha256=up.get('sha256'), size=up.get('size')))
        return out

    @property
    def load_source(self) -> str:
        """Where ``pretrained=True`` loads this tag from first: 'osnet-zoo' (our published safetensors), 'hub'
        (the authors' pinned Hub file), 'hub-unpinned' (the authors' Hub file without a recorded revision:
        trusted on first use), 'gdrive' (Google Drive: sha256-checked where recorded, else trusted on first
        use), 'none'."""
        sources = self.download_sources()
        return sources[0].kind if sources else 'none'

    def training_description(self) -> str:
        """Human-readable training data, e.g. 'MSMT17 (combineall)'."""
        names = ' + '.join(DATASET_NAMES.get(d, d) for d in self.training_data)
        return names + (' (combineall: train + query + gallery)' if self.combineall else '')


DATASET_NAMES = {
    'imagenet-1k': 'ImageNet-1k', 'market1501': 'Market1501', 'dukemtmcreid': 'DukeMTMC-reID', 'msmt17': 'MSMT17',
    'cuhk03': 'CUHK03',
}

LOAD_SOURCES = {
    'osnet-zoo': 'our safetensors on the Hub (osnet-zoo/ARCH.TAG at a recorded revision, sha256-checked)',
    'hub': "the authors' file on the Hub (kaiyangzhou/osnet at a pinned revision, sha256-checked)",
    'hub-unpinned': "the authors' file on the Hub without a recorded revision or sha256: downloaded and trusted on "
                    'first use (its sha256 is locked in the cache; OSNET_ZOO_STRICT_WEIGHTS=1 refuses it)',
    'gdrive': "the authors' file on Google Drive (gdown): sha256-checked where the manifest records it, else "
              'trusted on first use (OSNET_ZOO_STRICT_WEIGHTS=1 refuses those)',
    'none': 'no known location',
}


def gdrive_url(gdrive_id: str) -> str:
    """The Google Drive link of a file id."""
    return f'https://drive.google.com/uc?id={gdrive_id}'


@dataclass
class WeightsManifest:
    """A parsed manifest. ``data`` is the JSON as read (kept for lossless updates)."""
    path: Optional[Path]
    data: Dict[str, Any]
    entries: Dict[str, WeightsEntry]

    @property
    def default_tags(self) -> Dict[str, str]:
        """Architecture -> its default tag (a copy)."""
        return dict(self.data['default_tags'])

    @property
    def reference_defaults(self) -> Dict[str, Any]:
        """The reference trainer's input size, mean / std and distance, used for entries
        that record none (a copy)."""
        return dict(self.data['reference_defaults'])

    def __iter__(self) -> Iterator[WeightsEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, name: str) -> Optional[WeightsEntry]:
        """The entry ``architecture.tag``, or None."""
        return self.entries.get(name)

    def entry(self, name: str) -> WeightsEntry:
        """The entry ``architecture.tag``; a KeyError lists the known tags of that architecture."""
        if name in self.entries:
            return self.entries[name]
        arch = name.split('.')[0]
        known = [e.name for e in self if e.architecture == arch] or sorted({e.architecture for e in self})
        raise KeyError(f'{name!r} is not in the weights manifest {self.path}; known: {known}')

    def most_pinned_revision(self, repo_id: str) -> Optional[str]:
        """The revision of ``repo_id`` that most entries pin (where an unpinned file of that repo is looked
        for first), or None when none is pinned."""
        counts: Dict[str, int] = {}
        for entry in self:
            loc = entry.upstream_file
            if loc is not None and loc.repo_id == repo_id and loc.revision:
                counts[loc.revision] = counts.get(loc.revision, 0) + 1
        return max(counts, key=counts.get) if counts else None

    def find_file(self, repo_id: str, filename: str) -> Optional[Tuple[WeightsEntry, HubFile]]:
        """The entry and file record of a Hub file (ours or upstream), matched by repo id and file name."""
        for entry in self:
            for loc in (entry.ours, entry.upstream_file):
                if loc is not None and loc.repo_id == repo_id and loc.filename == filename:
                    return entry, loc
        return None

    def updated(self, name: str, changes: Mapping[str, Any]) -> 'WeightsManifest':
        """A copy with fields of entry ``name`` changed; keys are dotted paths ('hub.sha256', 'num_classes',
        'sources.num_classes'). The result is re-validated."""
        data = json.loads(json.dumps(self.data))
        index = next((i for i, e in enumerate(data['entries']) if f"{e['architecture']}.{e['tag']}" == name), None)
        if index is None:
            self.entry(name)  # raises with the known tags
        raw = data['entries'][index]
        for path, value in changes.items():
            *parents, leaf = path.split('.')
            node = raw
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return parse_manifest(data, self.path)


def active_manifest_path() -> Path:
    """``$OSNET_ZOO_MANIFEST`` if set, else the packaged manifest."""
    override = os.environ.get(MANIFEST_ENV)
    return Path(override).expanduser() if override else PACKAGED_MANIFEST


def load_manifest(path: Optional[Union[str, os.PathLike]] = None) -> WeightsManifest:
    """Read and check a manifest (default: the active one, see ``active_manifest_path``)."""
    path = Path(path) if path is not None else active_manifest_path()
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except FileNotFoundError:
        source = f' (set by ${MANIFEST_ENV})' if os.environ.get(MANIFEST_ENV) and path == active_manifest_path() else ''
        raise ManifestError(f'Weights manifest not found: {path}{source}') from None
    except json.JSONDecodeError as e:
        raise ManifestError(f'Weights manifest {path} is not valid JSON: {e}') from e
    return parse_manifest(data, path)


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ManifestError(f'{where}: {msg}')


def _opt_tuple(value: Any) -> Optional[tuple]:
    return tuple(value) if value is not None else None


def parse_manifest(data: Dict[str, Any], path: Optional[Path] = None) -> WeightsManifest:
    """Typed reading of a manifest dict. Checks what loading relies on (keys, types, digests, unique names,
    default tags); the full contract is ``weights_manifest.schema.json`` (see ``validate_manifest_schema``)."""
    where = str(path or 'manifest')
    _check(isinstance(data, dict), where, 'expected a JSON object at the top level')
    _check(data.get('schema_version') == 2, where, f"schema_version must be 2, got {data.get('schema_version')!r}")
    for key in ('entries', 'default_tags', 'reference_defaults'):
        _check(key in data, where, f'missing top-level key {key!r}')
    _check(isinstance(data['entries'], list), where, f"'entries' must be a list, got {type(data['entries']).__name__}")
    _check(isinstance(data['default_tags'], dict) and all(isinstance(v, str) for v in data['default_tags'].values()),
           where, f"'default_tags' must be an object of architecture: tag, got {data['default_tags']!r:.80}")
    entries: Dict[str, WeightsEntry] = {}
    for i, raw in enumerate(data['entries']):
        name = f"{raw.get('architecture')}.{raw.get('tag')}" if isinstance(raw, dict) else f'#{i}'
        at = f'{where}: entry {i} ({name})'
        try:
            hub, upstream = dict(raw['hub']), dict(raw['upstream'])
            entry = WeightsEntry(
                architecture=raw['architecture'], tag=raw['tag'], task=raw['task'],
                training_data=tuple(raw['training_data']), training_data_text=raw.get('training_data_text'),
                combineall=raw['combineall'], num_classes=raw['num_classes'],
                input_size=_opt_tuple(raw['input_size']), mean=_opt_tuple(raw['mean']), std=_opt_tuple(raw['std']),
                transforms=_opt_tuple(raw.get('transforms')), distance=raw['distance'], loss=raw.get('loss'),
                evaluation=tuple(Evaluation(**ev) for ev in raw['evaluation']), upstream=upstream, hub=hub,
                base_model=raw.get('base_model'), license=raw['license'], notes=raw.get('notes'),
                sources=dict(raw.get('sources') or {}))
            for key in ('repo_id', 'filename', 'revision', 'sha256', 'size'):
                hub[key]  # noqa: B018 -- presence check, raises KeyError naming the key
            for key in ('filename', 'gdrive_id', 'hf_hub_id', 'hf_revision', 'sha256', 'size'):
                upstream[key]  # noqa: B018
        except KeyError as e:
            raise ManifestError(f'{at}: missing key {e.args[0]!r}') from None
        except TypeError as e:
            raise ManifestError(f'{at}: malformed value ({e})') from None
        _check(name not in entries, at, 'duplicate architecture.tag')
        for ev in entry.evaluation:
            for metric in ('rank1', 'rank5', 'rank10', 'mAP'):
                value = getattr(ev, metric)
                _check(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)), at,
                       f'evaluation {ev.target!r}: {metric} must be a number or null, got {value!r}')
        _check(entry.num_classes is None or (isinstance(entry.num_classes, int) and entry.num_classes >= 0), at,
               f'num_classes must be a non-negative integer or null, got {entry.num_classes!r}')
        for label, digest in (('hub.sha256', hub['sha256']), ('upstream.sha256', upstream['sha256'])):
            _check(digest is None or bool(_SHA256.match(str(digest))), at,
                   f'{label} must be 64 lowercase hex digits or null, got {digest!r}')
        _check(entry.base_model is None or entry.base_model in {f"{r['architecture']}.{r['tag']}" for r in
                                                                 data['entries'] if isinstance(r, dict)},
               at, f'base_model {entry.base_model!r} is not an entry of the manifest')
        entries[name] = entry
    for arch, tag in data['default_tags'].items():
        _check(f'{arch}.{tag}' in entries, where, f'default tag {arch}.{tag} has no entry')
    return WeightsManifest(path=path, data=data, entries=entries)


def validate_manifest_schema(data: Dict[str, Any]) -> None:
    """Validate against ``weights_manifest.schema.json`` with jsonschema (a test/dev dependency).

    Raises:
        ManifestError: naming the failing path and the rule.
    """
    import jsonschema  # only needed to validate, never to load weights

    schema = json.loads(MANIFEST_SCHEMA.read_text(encoding='utf-8'))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at {'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors[:10]]
        raise ManifestError(f'Weights manifest breaks the schema ({len(errors)} errors):\n' + '\n'.join(lines))


def dumps_manifest(data: Dict[str, Any]) -> str:
    """JSON text as the manifest is kept: 2-space indent, short lists of numbers on one line."""

    def render(value: Any, indent: int) -> str:
        pad, inner = ' ' * indent, ' ' * (indent + 2)
        if isinstance(value, dict):
            if not value:
                return '{}'
            items = [f'{inner}{json.dumps(k)}: {render(v, indent + 2)}' for k, v in value.items()]
            return '{\n' + ',\n'.join(items) + '\n' + pad + '}'
        if isinstance(value, list):
            if all(not isinstance(v, (dict, list)) for v in value):
                return '[' + ', '.join(json.dumps(v) for v in value) + ']'
            return '[\n' + ',\n'.join(inner + render(v, indent + 2) for v in value) + '\n' + pad + ']'
        return json.dumps(value, ensure_ascii=False)

    return render(data, 0) + '\n'


def write_manifest(manifest: WeightsManifest, path: Optional[Union[str, os.PathLike]] = None) -> List[Path]:
    """Write atomically (temp file + os.replace) to ``path`` (default: where it was read from).

    Writing the packaged manifest of a source checkout also refreshes the repository-root copy
    (``weights_manifest.json`` beside ``pyproject.toml``), so the two never drift apart.
    Returns the paths written.
    """
    target = Path(path) if path is not None else manifest.path
    if target is None:
        raise ManifestError('write_manifest needs a path for a manifest that was not read from a file')
    text = dumps_manifest(manifest.data)
    parse_manifest(json.loads(text), target)  # never write something we could not read back
    written = [target]
    mirror = repo_root_copy(target)
    if mirror is not None:
        written.append(mirror)
    for out in written:
        atomic_write_text(out, text)
    return written



def repo_root_copy(target: Union[str, os.PathLike]) -> Optional[Path]:
    """The repository-root copy to keep equal to ``target``: only for the packaged manifest of a source
    checkout (``weights_manifest.json`` beside ``pyproject.toml``), else None."""
    mirror = PACKAGED_MANIFEST.parents[2] / 'weights_manifest.json'
    if Path(target).resolve() == PACKAGED_MANIFEST.resolve() and mirror.is_file() and \
            (mirror.parent / 'pyproject.toml').is_file():
        return mirror
    return None


# ---------------------------------------------------------------------------------------------------- timm cfgs

def pretrained_cfgs(base_cfg: Callable[..., Dict[str, Any]],
                    manifest: Optional[WeightsManifest] = None) -> Dict[str, Dict[str, Any]]:
    """timm pretrained cfgs, ``'architecture.tag' -> cfg``, one per manifest entry, default tag first.

    ``base_cfg(**overrides)`` builds a cfg dict (``osnet._cfg``). A cfg points at the entry's best pinned
    Hub location (``repo@revision`` + file name); an entry without one points at the authors' unpinned Hub
    file or its Google Drive link, which the loader refuses with instructions instead of fetching. The input
    size, mean and std are the entry's, or the reference defaults where the entry records none;
    ``num_classes`` is the checkpoint's classifier size, or 0 (the re-ID embedding) while that is unknown.
    """
    manifest = manifest or load_manifest()
    defaults = manifest.reference_defaults
    ordered = sorted(manifest, key=lambda e: (e.architecture, e.tag != manifest.default_tags.get(e.architecture)))
    cfgs = {}
    for entry in ordered:
        pinned = entry.locations()
        best = pinned[0] if pinned else entry.upstream_file
        source = dict(hf_hub_id=best.repo_id + (f'@{best.revision}' if best.revision else ''),
                      hf_hub_filename=best.filename) if best is not None else dict(url=entry.gdrive_url or '')
        cfgs[entry.name] = base_cfg(
            **source,
            num_classes=entry.num_classes if entry.num_classes is not None else 0,
            input_size=tuple(entry.input_size or defaults['input_size']),
            mean=tuple(entry.mean or defaults['mean']),
            std=tuple(entry.std or defaults['std']),
            license=entry.license,
            description=describe_entry(entry),
        )
    return cfgs


def describe_entry(entry: WeightsEntry) -> str:
    """One line for timm's ``description``: what the checkpoint is and what it reports."""
    if entry.task == 'imagenet-classification':
        return f'{entry.architecture} trained on ImageNet-1k (reference checkpoint)'
    results = ', '.join(f'{ev.target} R1 {ev.rank1} mAP {ev.mAP}' for ev in entry.evaluation)
    return (f'{entry.architecture} for person re-ID, trained on {entry.training_description()}'
            + (f'; reported {results}' if results else '') + ' (reference checkpoint)')
