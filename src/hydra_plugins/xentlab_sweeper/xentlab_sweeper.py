"""`hydra/sweeper=xentlab` (xentlab's default): Hydra's grid sweeper, plus two ways of choosing jobs that look at the
results of earlier ones: tuned comparisons (`sweep.tuning.trials > 0`, xentlab.cli.tuned) and seeds until decided
(`sweep.until_decided=true`, xentlab.cli.until_decided). Kept light: Hydra imports this module on every start."""

# No `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules, where dataclasses cannot
# resolve string annotations.
from dataclasses import dataclass
from typing import Any, Dict, List, Optional  # noqa: UP035 - see above

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class XentlabSweeperConf:
    _target_: str = "hydra_plugins.xentlab_sweeper.xentlab_sweeper.XentlabSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(group="hydra/sweeper", name="xentlab", node=XentlabSweeperConf, provider="xentlab")


class XentlabSweeper(BasicSweeper):
    """The grid as Hydra's basic sweeper launches it, unless the config's `sweep` node asks for a tuned or a
    sequential sweep."""

    def sweep(self, arguments: List[str]) -> Any:  # noqa: UP006
        settings = self.config.get("sweep") if self.config is not None else None
        if settings is not None and int(settings.tuning.trials) > 0:
            from xentlab.cli.tuned import run_tuned

            return run_tuned(self, arguments)
        if settings is not None and bool(settings.until_decided):
            from xentlab.cli.until_decided import run_until_decided

            return run_until_decided(self, arguments)
        if settings is not None:
            from xentlab.cli.sweep_grid import forget_designs

            forget_designs(self)
        return super().sweep(arguments)
