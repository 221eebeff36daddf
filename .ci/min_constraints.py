"""Print a pip constraints file pinning each direct dependency of pyproject.toml to its declared minimum.

    python3 .ci/min_constraints.py > min-constraints.txt
    pip install -c min-constraints.txt -e .

Every entry of [project] dependencies must declare a minimum (``name>=X``): one without is an error, since the
minimum-versions job could not test it. torch and torchvision are the exception: the only builds this CI can
install are the ones on its disk (torch 2.14.1 / torchvision 0.29.1; PyPI's other torch builds are multi-GB CUDA
wheels), so they are pinned to those and their declared minimum is the tested pair itself (see
docs/trackers.md, "Dependency ranges").
"""
import re
import sys
import tomllib
from pathlib import Path

# the builds on this CI's disk, used whatever pyproject declares (their declared minimum must not be lower)
ON_DISK = {'torch': '2.14.1', 'torchvision': '0.29.1'}
_REQUIREMENT = re.compile(r'^\s*([A-Za-z0-9_.\-]+)\s*(?:\[[^\]]*\])?\s*(.*?)\s*(?:;.*)?$')


def minimums(pyproject: Path) -> dict:
    """name -> its declared minimum version, for every entry of [project] dependencies."""
    out = {}
    for requirement in tomllib.loads(pyproject.read_text())['project']['dependencies']:
        name, spec = _REQUIREMENT.match(requirement).groups()
        lower = [v for op, v in re.findall(r'(>=|==|~=)\s*([^,\s]+)', spec)]
        if not lower:
            raise SystemExit(f'{pyproject}: dependency {requirement!r} declares no minimum (>=X): the minimum-versions '
                             'job cannot test it')
        out[name.lower().replace('_', '-')] = lower[0]
    return out


def main() -> None:
    found = minimums(Path(__file__).resolve().parent.parent / 'pyproject.toml')
    for name, version in found.items():
        if name in ON_DISK:
            if tuple(map(int, version.split('.'))) > tuple(map(int, ON_DISK[name].split('.'))):
                raise SystemExit(f'pyproject.toml: {name}>={version} is above the build on disk ({ON_DISK[name]})')
            print(f'{name}=={ON_DISK[name]}  # declared >={version}; only this build is on the CI disk')
        else:
            print(f'{name}=={version}')


if __name__ == '__main__':
    main()
    sys.stdout.flush()
