"""Train OSNet for person re-identification.

With no arguments it trains a small OSNet on the embedded synthetic re-ID set on the CPU, evaluates it,
and prints Rank-1 / mAP. The papers' recipes ship with the package (examples: ``--help``, or
``osnet_zoo/train/options.py``)::

    python -m osnet_zoo.train                                   # synthetic demo, CPU, a few minutes
    python -m osnet_zoo.train --recipe mix4 --root ~/datasets --device cuda --output runs/mix4

Any recipe value can be overridden by its command-line option. Every epoch an atomic checkpoint is written
to ``OUTPUT/checkpoint.pth``; ``--resume`` continues from it. The training itself is
:func:`osnet_zoo.train.training.train`, one function that reads top to bottom.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

from osnet_zoo import cli
from osnet_zoo.train.options import get_args_parser, parse_config
from osnet_zoo.train.training import train

__all__ = ['get_args_parser', 'main']


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Run ``python -m osnet_zoo.train``; returns the final evaluation results per target dataset."""
    cfg, given = parse_config(argv)
    _, line = cli.set_up_threads(get_args_parser().parse_args(argv).threads, cfg.workers)
    if os.environ.get('RANK', '0') == '0':  # the start line, once (torchrun: rank 0)
        print(line)
    return train(cfg, given)


if __name__ == '__main__':
    sys.exit(cli.run(main))
