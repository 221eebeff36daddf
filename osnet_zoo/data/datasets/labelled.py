"""Labelled image sets of the papers' other tasks: category recognition (CIFAR, ImageNet) and multi-label
person attributes (PA-100K). A split is a list of image files or an in-memory uint8 array, with labels."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import torch

__all__ = ['LabelledSplit', 'LabelledDataset', 'TASKS']

# what a dataset's labels are: one class per image, or a 0/1 vector of attributes per image
TASKS = ('classification', 'attributes')


@dataclass
class LabelledSplit:
    """One split: ``labels`` (N,) int64 class ids, or (N, A) float 0/1 attributes; the images either as
    files (``paths``) or decoded in memory (``pixels``, uint8 (N, 3, H, W): CIFAR's binary batches)."""
    labels: torch.Tensor
    paths: Optional[List[str]] = None
    pixels: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if (self.paths is None) == (self.pixels is None):
            raise ValueError('LabelledSplit needs exactly one of paths or pixels.')
        n = len(self.paths) if self.paths is not None else int(self.pixels.shape[0])
        if n != len(self.labels):
            raise ValueError(f'LabelledSplit: {n} images but {len(self.labels)} labels.')

    def __len__(self) -> int:
        return len(self.labels)

    def name(self, index: int) -> str:
        """The image's file, or ``#index`` for an in-memory image."""
        return self.paths[index] if self.paths is not None else f'#{index}'


@dataclass
class LabelledDataset:
    """A labelled dataset: ``task`` (one of ``TASKS``), ``classes`` (class or attribute names), the
    training split, the test split (what results.json reports) and, where the release has one, a
    validation split."""
    name: str
    task: str
    classes: List[str]
    train: LabelledSplit
    test: LabelledSplit
    val: Optional[LabelledSplit] = None
    root: Optional[Path] = None
    notes: List[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Output units of the head: classes, or attributes."""
        return len(self.classes)

    def summary(self) -> str:
        """The name, task and one line per split."""
        rows = [f'  {s:<6}{len(getattr(self, s)):>9} images' for s in ('train', 'val', 'test')
                if getattr(self, s) is not None]
        unit = 'attributes' if self.task == 'attributes' else 'classes'
        return f'{self.name} ({self.task}, {self.num_classes} {unit})\n' + '\n'.join(rows)


def check_class_names(names: Sequence[str], dataset: str, source: os.PathLike) -> List[str]:
    """Class names, refusing an empty list (naming the file they came from)."""
    names = [str(n) for n in names]
    if not names:
        raise ValueError(f'{dataset}: no class names in {source}')
    return names
