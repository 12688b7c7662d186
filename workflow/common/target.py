"""Where one training run (an experiment x seed) lives and what it publishes.

Every train stage takes the same five things besides its settings and data; they travel as
one object from the command line (``cli.add_run_args``) to the scaffold
(``training.train_settings`` and ``training.fit_and_publish``), so no trainer passes them
one by one. Kept free of torch, so that a script's ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunTarget:
    """``run_dir`` keeps ``last.ckpt`` and the history across reruns (an undeclared folder);
    ``final`` is the published checkpoint (None: publish nothing); ``gpus`` per node, one DDP
    process each (0: CPU) on ``num_nodes`` nodes."""

    run_dir: Path
    final: Path | None = None
    seed: int = 0
    gpus: int = 0
    num_nodes: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))
        if self.final is not None:
            object.__setattr__(self, "final", Path(self.final))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunTarget:
        """From the options of ``cli.add_run_args`` (``--devices``/``--num-nodes`` where a
        stage has them)."""
        return cls(
            run_dir=args.run_dir,
            final=args.out,
            seed=args.seed,
            gpus=getattr(args, "devices", 0),
            num_nodes=getattr(args, "num_nodes", 1),
        )
