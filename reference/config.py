"""Model and run configuration: frozen dataclasses, presets and validation.

The config is the one source of sizes for both engines; it is written into every checkpoint,
`.npz` export and report, so every default carries a comment saying why it is what it is.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from reference.errors import InputError


class ConfigError(InputError):
    """A configuration value that cannot describe a valid model or run."""


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

    def validate(self) -> TrainConfig:
        for name in ("batch_size", "group_size", "micro_batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name}={value!r} must be a positive integer")
        if not (self.lr > 0):
            raise ConfigError(f"lr={self.lr!r} must be positive")
        if self.warmup_steps < 0 or self.total_steps <= 0:
            raise ConfigError("warmup_steps must be >= 0 and total_steps > 0")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("beta1 and beta2 must lie in [0, 1)")
        if self.clip_norm <= 0:
            raise ConfigError(f"clip_norm={self.clip_norm!r} must be positive")
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
                preset=data.get("preset", "custom"),
            ).validate()
        except (KeyError, TypeError) as exc:
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


# The fast engine's micro-batch of the seed preset, from a measured table (issue #12; one
# worker, float32, CPU seconds per batch against one core's sgemm, best of 6 alternating
# rounds): micro-batch 2: 0.58, 4: 0.60, 8: 0.63, 16: 0.62 of the peak. Bigger GEMMs read
# and pack the weights and their gradients 4x less often than 2 rows; 16 rows stop helping as
# activations outgrow the caches. One value per preset, never per thread count: the micro-batch
# sets the order in which weight gradients are summed, so it must not depend on T.
SEED_MICRO_BATCH = 8

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
