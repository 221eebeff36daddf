"""A synthetic re-ID dataset, written in the exact Market1501 layout: the embedded default for training and tests.

Every identity has its own appearance: shirt and trouser colours, a clothing pattern (plain, stripes, checks,
a chest logo), sleeve length, body shape (height, shoulder width, leg length), hair, skin and shoe colours,
and maybe a bag. Every camera has its own style: a colour cast, brightness and contrast, blur, sensor noise,
a background, and a viewpoint (front, back or side: the back hides the face and moves the bag to the other
side, the side view narrows the body). ``domain=1`` draws the cameras from another distribution (dimmer,
stronger casts, blurrier, other backgrounds), for cross-domain experiments.

Identity is what a model can learn (appearance survives every camera style); camera style is the nuisance.
File names follow Market1501: ``PPPP_cCs1_FFFFFF_NN.jpg``; the test split also holds distractors (pid 0)
and junk crops (pid -1), as Market1501 does.
"""
from __future__ import annotations

import colorsys
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .base import ReIDDataset
from .market1501 import market1501

__all__ = ['SyntheticConfig', 'make_synthetic_reid', 'synthetic_reid']

_MANIFEST = 'synthetic_reid.json'
_VERSION = 1


@dataclass
class SyntheticConfig:
    """What to generate. The defaults give about 1,200 images in a few seconds: enough to train and test on."""

    num_train_ids: int = 100
    num_test_ids: int = 50
    num_cameras: int = 6
    cameras_per_id: Tuple[int, int] = (2, 4)
    images_per_camera: Tuple[int, int] = (1, 4)
    num_distractors: int = 30
    num_junk: int = 10
    height: int = 128
    width: int = 64
    domain: int = 0
    seed: int = 0


def _rgb(h: float, s: float, v: float) -> Tuple[int, int, int]:
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(h % 1.0, s, v))


def _identity(rng: np.random.Generator) -> Dict:
    skins = [(241, 194, 167), (224, 172, 105), (198, 134, 66), (141, 85, 36), (255, 219, 172)]
    hairs = [(20, 20, 20), (60, 40, 25), (110, 75, 40), (170, 140, 90), (120, 120, 120)]
    return {
        'upper': _rgb(rng.random(), rng.uniform(0.35, 1.0), rng.uniform(0.3, 1.0)),
        'lower': _rgb(rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.85)),
        'accent': _rgb(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0)),
        'pattern': int(rng.integers(0, 5)),  # 0 plain, 1 horizontal stripes, 2 vertical, 3 checks, 4 logo
        'stripe': int(rng.integers(3, 7)),
        'long_sleeves': bool(rng.random() < 0.5),
        'skin': skins[rng.integers(len(skins))],
        'hair': hairs[rng.integers(len(hairs))],
        'shoes': _rgb(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.1, 0.9)),
        'height': rng.uniform(0.80, 0.97),
        'shoulders': rng.uniform(0.42, 0.70),
        'legs': rng.uniform(0.42, 0.52),  # fraction of the body height below the waist
        'bag': int(rng.integers(0, 3)),  # 0 none, 1 backpack-ish block, 2 side bag
        'bag_colour': _rgb(rng.random(), rng.uniform(0.2, 1.0), rng.uniform(0.2, 0.9)),
    }


def _camera(rng: np.random.Generator, domain: int) -> Dict:
    if domain == 0:
        cast, bright, blur, noise = rng.uniform(0.82, 1.18, 3), rng.uniform(0.8, 1.15), rng.uniform(0, 0.9), 4.0
        bg = _rgb(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.35, 0.75))
    else:  # another "city": dim, strongly tinted, blurry cameras on saturated backgrounds
        cast, bright, blur, noise = rng.uniform(0.6, 1.4, 3), rng.uniform(0.55, 0.9), rng.uniform(0.6, 1.6), 9.0
        bg = _rgb(rng.random(), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6))
    return {'cast': cast.tolist(), 'brightness': float(bright), 'contrast': float(rng.uniform(0.75, 1.1)),
            'blur': float(blur), 'noise': noise, 'background': bg, 'floor': float(rng.uniform(0.7, 0.9)),
            'view': int(rng.integers(0, 3)),  # 0 front, 1 back, 2 side
            'texture': int(rng.integers(0, 3))}


def _render(person: Dict, cam: Dict, rng: np.random.Generator, h: int, w: int) -> Image.Image:
    """One image of ``person`` seen by ``cam``: background, body, maybe an occluder, then the camera's look."""
    img = _background(cam, h, w)
    draw = ImageDraw.Draw(img)
    _draw_person(draw, person, cam['view'], rng, h, w)
    if rng.random() < 0.15:  # an occluder at the bottom (a car, a railing)
        oy = rng.uniform(0.7, 0.85) * h
        draw.rectangle([0, oy, w, h], fill=_rgb(rng.random(), 0.3, rng.uniform(0.2, 0.6)))
    return _camera_look(img, cam, rng)


def _background(cam: Dict, h: int, w: int) -> Image.Image:
    """The camera's wall colour with a texture, and a floor."""
    ys = np.linspace(0.85, 1.1, h)[:, None, None]
    canvas = np.asarray(cam['background'], np.float32)[None, None, :] * ys * np.ones((1, w, 1), np.float32)
    if cam['texture'] == 1:
        canvas[:, (np.arange(w) // 8) % 2 == 0] *= 0.88
    elif cam['texture'] == 2:
        canvas[(np.arange(h) // 10) % 2 == 0] *= 0.9
    canvas[int(cam['floor'] * h):] *= 0.7
    return Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))


def _draw_person(draw: ImageDraw.ImageDraw, person: Dict, view: int, rng: np.random.Generator, h: int,
                 w: int) -> None:
    """Legs and shoes, bag, arms, torso with its pattern, head; ``view`` 0 front, 1 back, 2 side."""
    scale = rng.uniform(0.95, 1.05)
    body_h = person['height'] * h * scale
    top = h - body_h - rng.uniform(1, 5)
    cx = w / 2 + rng.uniform(-4, 4)
    half = person['shoulders'] * w / 2 * (0.72 if view == 2 else 1.0)
    head_r = body_h * 0.075
    neck = top + 2 * head_r
    waist = top + body_h * (1 - person['legs'])
    feet = top + body_h
    # legs and shoes
    spread = rng.uniform(0.1, 0.5) * half
    leg_w = half * 0.42
    for side in (-1, 1):
        x = cx + side * spread * 0.6
        draw.rectangle([x - leg_w / 2, waist, x + leg_w / 2, feet - 3], fill=person['lower'])
        draw.rectangle([x - leg_w / 2 - 1, feet - 4, x + leg_w / 2 + 1, feet], fill=person['shoes'])
    # bag behind the body when seen from the front
    bag_side = 1 if view != 1 else -1
    if person['bag'] == 1 and view == 0:
        draw.rectangle([cx - half * 0.8, neck + 4, cx + half * 0.8, waist - 2], fill=person['bag_colour'])
    # arms, then torso
    arm_w = half * 0.3
    sleeve = person['upper'] if person['long_sleeves'] else person['skin']
    swing = rng.uniform(-3, 3)
    for side in (-1, 1):
        x = cx + side * (half + arm_w / 2 - 1)
        draw.rectangle([x - arm_w / 2 + swing * side * 0.3, neck + 3, x + arm_w / 2 + swing * side * 0.3,
                        waist + body_h * 0.08], fill=sleeve)
        draw.rectangle([x - arm_w / 2, neck + 3, x + arm_w / 2, neck + 3 + body_h * 0.1], fill=person['upper'])
    box = [cx - half, neck + 2, cx + half, waist]
    draw.rectangle(box, fill=person['upper'])
    _draw_pattern(draw, person, box, view, cx, half, neck)
    if person['bag'] == 1 and view == 1:  # backpack seen from behind
        draw.rectangle([cx - half * 0.7, neck + 5, cx + half * 0.7, waist - 3], fill=person['bag_colour'])
    if person['bag'] == 2:
        bx = cx + bag_side * (half + arm_w)
        draw.rectangle([bx - half * 0.35, waist - body_h * 0.12, bx + half * 0.35, waist + body_h * 0.08],
                       fill=person['bag_colour'])
    # head: face from the front and side, hair from behind
    face = person['hair'] if view == 1 else person['skin']
    draw.ellipse([cx - head_r, top, cx + head_r, top + 2 * head_r], fill=face)
    draw.chord([cx - head_r, top - 1, cx + head_r, top + 1.3 * head_r], 180, 360, fill=person['hair'])


def _draw_pattern(draw: ImageDraw.ImageDraw, person: Dict, box: List[float], view: int, cx: float, half: float,
                  neck: float) -> None:
    """The shirt's pattern on the torso ``box``: stripes, checks or a chest logo (not seen from behind)."""
    pat, step, accent = person['pattern'], person['stripe'], person['accent']
    if pat == 1:
        for y in np.arange(box[1], box[3], 2 * step):
            draw.rectangle([box[0], y, box[2], min(y + step - 1, box[3])], fill=accent)
    elif pat == 2:
        for x in np.arange(box[0], box[2], 2 * step):
            draw.rectangle([x, box[1], min(x + step - 1, box[2]), box[3]], fill=accent)
    elif pat == 3:
        for i, y in enumerate(np.arange(box[1], box[3], step)):
            for j, x in enumerate(np.arange(box[0], box[2], step)):
                if (i + j) % 2:
                    draw.rectangle([x, y, min(x + step - 1, box[2]), min(y + step - 1, box[3])], fill=accent)
    elif pat == 4 and view != 1:  # a chest logo, only visible from the front or side
        draw.ellipse([cx - half * 0.45, neck + 6, cx + half * 0.45, neck + 6 + half * 0.9], fill=accent)


def _camera_look(img: Image.Image, cam: Dict, rng: np.random.Generator) -> Image.Image:
    """The camera's blur, colour cast, brightness, contrast and noise (mirrored when seen from behind)."""
    if cam['blur'] > 0.05:
        img = img.filter(ImageFilter.GaussianBlur(cam['blur']))
    arr = np.asarray(img, np.float32) * np.asarray(cam['cast'], np.float32) * cam['brightness']
    mean = arr.mean()
    arr = (arr - mean) * cam['contrast'] + mean + rng.normal(0, cam['noise'], arr.shape)
    if cam['view'] == 1:
        arr = arr[:, ::-1]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _junk(rng: np.random.Generator, person: Dict, cam: Dict, h: int, w: int) -> Image.Image:
    """A bad detection: mostly background with a sliver of a person, like Market1501's junk crops."""
    full = np.asarray(_render(person, cam, rng, h, w))
    sliver = full[:, : w // 4] if rng.random() < 0.5 else full[: h // 4]
    return Image.fromarray(sliver).resize((w, h))


@contextmanager
def building_dir(out_dir: Path, marker: str) -> Iterator[Path]:
    """Yield a new temporary folder beside ``out_dir`` to fill; when the block ends normally it is renamed to
    ``out_dir``, so a dataset folder is always complete. ``out_dir`` may not exist yet or be empty; if it
    already holds ``marker`` (a finished dataset) it is a FileExistsError. On an exception the temporary
    folder is removed."""
    if (out_dir / marker).exists():
        raise FileExistsError(f'{out_dir} already holds a synthetic dataset')
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.synthetic-', dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # an empty folder may be replaced
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not (out_dir / marker).exists():
                raise FileExistsError(f'{out_dir} exists and is not empty: choose an empty or new folder') from None
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same dataset first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_synthetic_reid(out_dir: Union[str, os.PathLike], config: Optional[SyntheticConfig] = None,
                        **overrides) -> Path:
    """Write a synthetic dataset in the Market1501 layout to ``out_dir`` (created; must not hold a dataset).

    ``bounding_box_train/`` holds the training identities; for each test identity, one image per camera
    goes to ``query/`` and the rest to ``bounding_box_test/``, with distractors (pid 0) and junk (pid -1).
    The folder is built under a temporary name and renamed at the end, so a dataset folder is always
    complete. Returns ``out_dir``.
    """
    cfg = config or SyntheticConfig()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise TypeError(f'unknown synthetic dataset option {k!r}; options: {list(asdict(cfg))}')
        setattr(cfg, k, v)
    lo, hi = cfg.cameras_per_id
    if cfg.num_cameras < 2 or lo < 2 or hi < lo:
        raise ValueError('need at least 2 cameras and 2 cameras per identity (a query needs a match elsewhere)')
    out_dir = Path(out_dir)
    with building_dir(out_dir, _MANIFEST) as tmp:
        for split in ('bounding_box_train', 'query', 'bounding_box_test'):
            (tmp / split).mkdir()
        rng = np.random.default_rng([cfg.seed, cfg.domain])
        cameras = [_camera(rng, cfg.domain) for _ in range(cfg.num_cameras)]
        frame = 0

        def save(img: Image.Image, split: str, pid: int, cam: int, n: int) -> None:
            nonlocal frame
            frame += 1
            name = f'{pid:04d}' if pid >= 0 else str(pid)
            img.save(tmp / split / f'{name}_c{cam + 1}s1_{frame:06d}_{n:02d}.jpg', quality=92)

        num_ids = cfg.num_train_ids + cfg.num_test_ids
        for pid in range(1, num_ids + 1):
            person = _identity(rng)
            cams = rng.choice(cfg.num_cameras, size=min(int(rng.integers(lo, hi + 1)), cfg.num_cameras),
                              replace=False)
            for cam in cams:
                count = int(rng.integers(cfg.images_per_camera[0], cfg.images_per_camera[1] + 1))
                if pid > cfg.num_train_ids:
                    count = max(count, 2)  # one query and at least one gallery image per camera
                for n in range(count):
                    img = _render(person, cameras[cam], rng, cfg.height, cfg.width)
                    split = 'bounding_box_train' if pid <= cfg.num_train_ids else (
                        'query' if n == 0 else 'bounding_box_test')
                    save(img, split, pid, int(cam), n)
        for _ in range(cfg.num_distractors):
            cam = int(rng.integers(cfg.num_cameras))
            save(_render(_identity(rng), cameras[cam], rng, cfg.height, cfg.width), 'bounding_box_test', 0, cam, 0)
        for _ in range(cfg.num_junk):
            cam = int(rng.integers(cfg.num_cameras))
            save(_junk(rng, _identity(rng), cameras[cam], cfg.height, cfg.width), 'bounding_box_test', -1, cam, 0)
        manifest = {'version': _VERSION, 'config': asdict(cfg), 'cameras': cameras}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out_dir


def synthetic_reid(root: Union[str, os.PathLike], domain: int = 0, **overrides) -> ReIDDataset:
    """The synthetic dataset under ``root`` (``root/synthetic_reid`` or ``root/synthetic_reid_b`` for
    domain 1), generated on first use with ``overrides`` of :class:`SyntheticConfig`. Later calls read it
    back: without options whatever it holds, with options only if they are the ones it was made with."""
    out = Path(root).expanduser() / ('synthetic_reid' if domain == 0 else 'synthetic_reid_b')
    wanted = asdict(SyntheticConfig(domain=domain))
    for k, v in overrides.items():
        if k not in wanted:
            raise TypeError(f'unknown synthetic dataset option {k!r}; options: {list(wanted)}')
        wanted[k] = v
    wanted = json.loads(json.dumps(wanted))  # tuples as lists, as the manifest stores them
    manifest = out / _MANIFEST
    if manifest.exists():
        have = json.loads(manifest.read_text()).get('config', {})
        if overrides and have != wanted:
            raise FileExistsError(f'{out} holds a synthetic dataset made with other options ({have}); '
                                  'delete it or use another root')
    else:
        make_synthetic_reid(out, SyntheticConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                   for k, v in wanted.items()}))
    ds = market1501(out, max_cam=0)
    ds.name = 'synthetic' if domain == 0 else 'synthetic_b'
    return ds
