"""In-process engine plug-ins for the engine tests, loaded as `--engine engine_plugins:NAME`
(the `module:factory` spelling of docs/ENGINES.md: no distribution needs installing)."""

from __future__ import annotations

import numpy as np

from reference.config import Config
from reference.engine import ReferenceEngine, StepResult

WRONG_TENSOR = "h.1.mlp.w_fc"  # the tensor whose gradient the broken plug-in gets wrong


def correct(config: Config, *, threads: int = 1, dtype: str = "float64", params=None,
            stall_timeout: float = 60.0) -> ReferenceEngine:
    """A correct third-party engine: the reference under another name."""
    return ReferenceEngine(config, params=params)


class _WrongGradient(ReferenceEngine):
    """Right everywhere except one tensor's gradient, 1% too large: the gates must name it."""

    def group_grads(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        result = super().group_grads(tokens, targets)
        result.grads[WRONG_TENSOR] = result.grads[WRONG_TENSOR] * 1.01
        return result


def wrong_gradient(config: Config, *, threads: int = 1, dtype: str = "float64", params=None,
                   stall_timeout: float = 60.0) -> ReferenceEngine:
    return _WrongGradient(config, params=params)


class _ThreadDependent(ReferenceEngine):
    """Within every tolerance but its bits depend on the thread count (as a real parallel sum
    may): bitwise is measured and reported, and fails only under --require-bitwise."""

    def __init__(self, config: Config, threads: int, params=None) -> None:
        super().__init__(config, params=params)
        self.threads = threads

    def group_grads(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        result = super().group_grads(tokens, targets)
        name = next(iter(result.grads))
        result.grads[name] = result.grads[name] * (1.0 + 1e-15 * self.threads)
        return result


def thread_dependent(config: Config, *, threads: int = 1, dtype: str = "float64", params=None,
                     stall_timeout: float = 60.0) -> ReferenceEngine:
    return _ThreadDependent(config, threads, params=params)


class _ZeroTargets(ReferenceEngine):
    """Right gradients, but claims to have counted no targets: a reply that cannot be true."""

    def group_grads(self, tokens: np.ndarray, targets: np.ndarray) -> StepResult:
        result = super().group_grads(tokens, targets)
        result.n_targets = 0
        return result


def zero_targets(config: Config, *, threads: int = 1, dtype: str = "float64", params=None,
                 stall_timeout: float = 60.0) -> ReferenceEngine:
    return _ZeroTargets(config, params=params)


def factory_raises(config: Config, *, threads: int = 1, dtype: str = "float64", params=None,
                   stall_timeout: float = 60.0) -> ReferenceEngine:
    """A plug-in whose factory fails: the error is the plug-in's, named as such."""
    raise RuntimeError("\x1b[31mCUDA device 7 not found\x1b[0m")


class _FailsMidSweep(ReferenceEngine):
    def __init__(self, config: Config, threads: int, params=None) -> None:
        if threads > 1:
            from plumbing.errors import FaultError

            raise FaultError("plug-in fault: cannot run with more than one thread")
        super().__init__(config, params=params)


def fails_mid_sweep(config: Config, *, threads: int = 1, dtype: str = "float64", params=None,
                    stall_timeout: float = 60.0) -> ReferenceEngine:
    """Runs T=1, faults at T=2: the sweep ends early, and the file must say so."""
    return _FailsMidSweep(config, threads, params=params)
