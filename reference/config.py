"""Model and run configuration: frozen dataclasses, presets and validation.

The config is the one source of sizes for both engines; it is written into every checkpoint,
`.npz` export and report, so every default carries a comment saying why it is what it is.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

from plumbing.errors import InputError
from reference.batches import LAST_GROUP_POLICIES


class ConfigError(InputError):
    """A configuration value that cannot describe a valid model or run."""


# Upper bounds (SPEC 12): a config read from a file must not ask for unbounded memory. Each is
# far above the largest preset (seed: V=788, S=128, d=256, L=6, f=1024) and below what one
# machine could hold; MAX_MATRIX_ELEMENTS (2^31, 8 GiB at float32) bounds the largest weights.
MODEL_LIMITS = {"vocab_size": 1 << 20, "seq_len": 1 << 16, "d_model": 1 << 14,
                "n_layers": 1 << 10, "n_heads": 1 << 10, "d_ff": 1 << 16}
MAX_MATRIX_ELEMENTS = 1 << 31
TRAIN_LIMITS = {"batch_size": 1 << 16, "group_size": 1 << 20, "micro_batch": 1 << 16}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the GPT-style decoder of SPEC section 1."""

    vocab_size: int  # V: includes the 4 special ids <pad> <unk> <bos> <eos>
    seq_len: int  # S: context length, positions 0..S-1 have a learned embedding
    d_model: int  # d: residual width
    n_layers: int  # L: transformer blocks
    n_heads: int  # H: attention heads, head size d/H
    d_ff: int  # f: feed-forward width

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def validate(self) -> ModelConfig:
        for name in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "d_ff"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"model size {name}={value!r} must be a positive integer")
            if value > MODEL_LIMITS[name]:
                raise ConfigError(f"model size {name}={value} exceeds the limit "
                                  f"{MODEL_LIMITS[name]}; this is no model this project trains")
        largest = max(self.vocab_size, self.seq_len, self.d_ff, self.d_model) * self.d_model
        if self.n_layers * largest > MAX_MATRIX_ELEMENTS:
            raise ConfigError(f"model sizes ask for over {MAX_MATRIX_ELEMENTS} weights per "
                              "parameter family; choose smaller sizes")
        if self.vocab_size < 5:
            raise ConfigError(
                f"vocab_size={self.vocab_size} leaves no room for words: 4 ids are special "
                "(<pad> <unk> <bos> <eos>); use at least 5"
            )
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "pick n_heads that divides d_model"
            )
        return self


@dataclass(frozen=True)
class TrainConfig:
    """Batching, optimiser and schedule settings of SPEC sections 2-3."""

    batch_size: int  # B: rows of S tokens per batch
    group_size: int  # G: batches per step (one batch group); independent of the thread count
    lr: float = 3e-4  # peak learning rate after warm-up (a common small-GPT value)
    warmup_steps: int = 10  # linear warm-up from lr/warmup_steps to lr
    total_steps: int = 1000  # cosine horizon: lr decays to min_lr at this step
    min_lr_ratio: float = 0.1  # floor of the cosine decay, as a fraction of lr
    beta1: float = 0.9  # AdamW first-moment decay (SPEC 3)
    beta2: float = 0.999  # AdamW second-moment decay (SPEC 3)
    eps: float = 1e-8  # AdamW denominator epsilon (SPEC 3)
    weight_decay: float = 0.01  # decoupled decay, applied to 2-D matrices only (SPEC 3)
    clip_norm: float = 1.0  # global gradient-norm clip before the update (SPEC 3)
    seed: int = 0  # parameter initialisation and synthetic corpus seed
    micro_batch: int = 2  # rows per micro-batch in the fast engine: bounds activation memory
    # (2 rows: 0.62 of one core's matmul peak at the seed preset in 34 MiB per workspace);
    # the last micro-batch of a batch may be shorter; fixed by the config, never by the thread
    # count, so results do not depend on T
    last_group: str = "keep"  # the epoch's short last group: keep | merge | drop
    # (reference/batches.py); "keep" is the corpus as it is, what the gates compare;
    # `spheres train` defaults to "merge" for training quality
    shuffle: bool = False  # visit each epoch's groups in an order drawn from (seed, epoch)
    # (reference/epoch_order.py); off here so engines and gates see corpus order;
    # `spheres train` turns it on unless --no-shuffle

    def validate(self) -> TrainConfig:
        for name in ("batch_size", "group_size", "micro_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
            if value > TRAIN_LIMITS[name]:
                raise ConfigError(f"{name}={value} exceeds the limit {TRAIN_LIMITS[name]}")
        for name in ("warmup_steps", "total_steps", "seed"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be a whole number >= 0")
        for name in ("lr", "min_lr_ratio", "beta1", "beta2", "eps", "weight_decay", "clip_norm"):
            if not _is_real(getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be a finite number")
        if not (0 <= self.min_lr_ratio <= 1 and self.eps > 0 and self.weight_decay >= 0):
            raise ConfigError("min_lr_ratio must lie in [0, 1], eps > 0 and weight_decay >= 0")
        if not (self.lr > 0):
            raise ConfigError(f"lr={self.lr!r} must be positive")
        if self.warmup_steps < 0 or self.total_steps <= 0:
            raise ConfigError("warmup_steps must be >= 0 and total_steps > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("beta1 and beta2 must lie in [0, 1)")
        if self.clip_norm <= 0:
            raise ConfigError(f"clip_norm={self.clip_norm!r} must be positive")
        if self.last_group not in LAST_GROUP_POLICIES:
            raise ConfigError(f"last_group={self.last_group!r} must be one of "
                              f"{', '.join(LAST_GROUP_POLICIES)}")
        if not isinstance(self.shuffle, bool):
            raise ConfigError(f"shuffle={self.shuffle!r} must be true or false")
        return self


@dataclass(frozen=True)
class Config:
    """A whole run: model sizes plus training settings."""

    model: ModelConfig
    train: TrainConfig
    preset: str = "custom"  # the preset name this config came from, for reports

    def validate(self) -> Config:
        self.model.validate()
        self.train.validate()
        return self

    def replace(self, **train_changes: Any) -> Config:
        """A copy with some TrainConfig fields changed (validated)."""
        return dataclasses.replace(
            self, train=dataclasses.replace(self.train, **train_changes)
        ).validate()

    def replace_model(self, **model_changes: Any) -> Config:
        """A copy with some ModelConfig fields changed (validated)."""
        return dataclasses.replace(
            self, model=dataclasses.replace(self.model, **model_changes)
        ).validate()

    def to_dict(self) -> dict[str, Any]:
        return {
            "preset": self.preset,
            "model": dataclasses.asdict(self.model),
            "train": dataclasses.asdict(self.train),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        try:
            return cls(
                model=ModelConfig(**data["model"]),
                train=TrainConfig(**data["train"]),
                preset=str(data.get("preset", "custom")),
            ).validate()
        except (KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"config is malformed: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class _Preset:
    model: ModelConfig
    batch_size: int
    group_size: int
    extra: dict[str, Any] = field(default_factory=dict)


# The fast engine's micro-batch of the seed preset, from a measured table (issue #12, after the
# GELU/LayerNorm kernel work; one worker, float32, best of 4 alternating rounds of one batch,
# thread CPU time): micro-batch 2: 3,144, 4: 3,316, 8: 3,215, 16: 3,242 tokens per CPU second.
# 4 is as fast as any (its GEMMs already have 512 rows) and its workspace is half of 8's
# (67 MiB instead of 134 MiB, one per core): the seed workload's peak RSS drops by 134 MiB.
# `make bench-ceiling` re-measures the table with the trainer at 1, 2 and 63 threads
# (reports/bench/ceiling.md). One value per preset, never per thread count: the micro-batch
# sets the order in which weight gradients are summed, so it must not depend on T.
SEED_MICRO_BATCH = 4

# SPEC section 1. `seed` reproduces the seed run (V=788 is what its 0.77 MB buffer implies).
PRESETS: dict[str, _Preset] = {
    "tiny": _Preset(ModelConfig(64, 16, 32, 2, 4, 128), batch_size=4, group_size=8),
    "small": _Preset(ModelConfig(512, 64, 128, 4, 4, 512), batch_size=16, group_size=12),
    "seed": _Preset(ModelConfig(788, 128, 256, 6, 8, 1024), batch_size=32, group_size=63,
                    extra={"micro_batch": SEED_MICRO_BATCH}),
}


def preset(name: str, **train_changes: Any) -> Config:
    """The named preset's config, with optional TrainConfig overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    train = TrainConfig(batch_size=p.batch_size, group_size=p.group_size, **p.extra)
    cfg = Config(model=p.model, train=train, preset=name)
    return cfg.replace(**train_changes) if train_changes else cfg.validate()
