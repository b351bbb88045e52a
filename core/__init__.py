"""priorstudy core: Soft-IntroVAE with a learnable multimodal prior, in pure PyTorch."""

from core.config import ConfigError, TrainConfig, resolve_config
from core.errors import TrainingDiverged

__all__ = ["ConfigError", "TrainConfig", "TrainingDiverged", "resolve_config", "train"]


def train(*args, **kwargs):
    """Run one training; see core.train.train (imported lazily to keep `import core` light)."""
    from core.train import train as _train

    return _train(*args, **kwargs)
