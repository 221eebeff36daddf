"""The package as the index receives it: ``python -m build`` makes the sdist and the wheel with no warning,
``twine check --strict`` passes, the licence is in both, the metadata says what the ecosystem reads (an SPDX
licence, the project's addresses), the README shown on the index links nowhere relative, and the sdist holds
what its own tests read (docs/, benchmarks/, tests/, the weights manifest).

The build runs in a subprocess on a copy of the checkout (setuptools writes its egg-info beside the sources),
``--no-isolation`` with the environment's setuptools: no network, and seconds rather than a fresh build
environment."""
import email
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

from conftest import REPO, child_env, run_python

pytest.importorskip('build', reason='python -m build needs the build package (pip install -e ".[test]")')
pytest.importorskip('twine', reason='twine check needs twine (pip install -e ".[test]")')

# what the sdist is built from: the package, what its tests read, and the project files
SOURCES = ['osnet_zoo', 'docs', 'benchmarks', 'tests', 'pyproject.toml', 'setup.cfg', 'MANIFEST.in', 'LICENSE',
           'README.md', 'weights_manifest.json']
# folders whose every file the sdist must hold (its tests read them)
SHIPPED_FOLDERS = ['docs', 'benchmarks', 'tests']
PROJECT = 'https://github.com/osnet-zoo/osnet-zoo'


def _copy_sources(dest: Path) -> Path:
    ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    """(sdist path, wheel path, the build's output) of ``python -m build --no-isolation`` on a copy of this
    checkout."""
    src = _copy_sources(tmp_path_factory.mktemp('src'))
    dist = tmp_path_factory.mktemp('dist')
    # PYTHONDONTWRITEBYTECODE (set in some shells and CI images) makes setuptools warn that it skips
    # byte-compiling: a property of the environment, not of the package
    proc = run_python('-m', 'build', '--no-isolation', '--outdir', dist, src, cwd=src,
                      env=child_env(PYTHONDONTWRITEBYTECODE=None), timeout=600, check=True)
    sdists, wheels = list(dist.glob('*.tar.gz')), list(dist.glob('*.whl'))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in dist.iterdir())
    return sdists[0], wheels[0], proc.stdout + proc.stderr


def test_build_gives_no_warning_and_twine_check_passes(built):
    sdist, wheel, output = built
    warnings = [line for line in output.splitlines() if 'warning' in line.lower()]
    assert not warnings, '\n'.join(warnings)
    proc = run_python('-m', 'twine', 'check', '--strict', sdist, wheel, check=True)
    assert proc.stdout.count('PASSED') == 2, proc.stdout


def test_license_and_metadata_in_the_wheel(built):
    _, wheel, _ = built
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        licenses = [n for n in names if re.fullmatch(r'osnet_zoo-[^/]+\.dist-info/licenses/LICENSE', n)]
        assert licenses, [n for n in names if 'dist-info' in n]
        assert 'MIT License' in zf.read(licenses[0]).decode()
        meta = email.message_from_bytes(zf.read(next(n for n in names if n.endswith('.dist-info/METADATA'))))
        # the package data every command reads
        assert {'osnet_zoo/weights/weights_manifest.json', 'osnet_zoo/train/recipes/synthetic.yaml'} <= set(names)
    assert meta['License-Expression'] == 'MIT' and meta['License-File'] == 'LICENSE'
    classifiers = meta.get_all('Classifier')
    assert not [c for c in classifiers if c.startswith('License ::')], classifiers  # deprecated by PEP 639
    assert {'Programming Language :: Python :: 3', 'Operating System :: OS Independent'} <= set(classifiers)
    urls = dict(u.split(', ', 1) for u in meta.get_all('Project-URL'))
    assert urls['Source'] == PROJECT and urls['Issues'] == PROJECT + '/issues'
    assert urls['Documentation'].startswith(PROJECT) and urls['Weights'] == 'https://huggingface.co/osnet-zoo'
    # the README as the index shows it: installs from the index first, every link absolute
    readme = meta.get_payload()
    assert meta['Description-Content-Type'] == 'text/markdown'
    assert readme.index('pip install osnet-zoo') < readme.index('pip install torch==')
    links = re.findall(r'\]\(([^)\s]+)\)', readme)
    assert links and all(link.startswith(('https://', '#')) for link in links), \
        [link for link in links if not link.startswith(('https://', '#'))]


def test_sdist_holds_the_license_and_what_its_tests_read(built):
    sdist, _, _ = built
    with tarfile.open(sdist) as tf:
        root = tf.getnames()[0].split('/')[0]
        names = {n.split('/', 1)[1] for n in tf.getnames() if '/' in n}
    assert {'LICENSE', 'README.md', 'pyproject.toml', 'weights_manifest.json', 'docs/index.md',
            'osnet_zoo/weights/weights_manifest.json'} <= names
    for folder in SHIPPED_FOLDERS:
        files = {p.relative_to(REPO).as_posix() for p in (REPO / folder).rglob('*')
                 if p.is_file() and '__pycache__' not in p.parts and not p.name.endswith('.pyc')}
        assert files and not files - names, f'{root}: missing from the sdist: {sorted(files - names)}'
    assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]
