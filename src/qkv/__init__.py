"""qkv: implement, train, run and explain the Transformer."""

from qkv.config import ModelConfig
from qkv.errors import CheckpointError, ConfigError, DataError, QkvError, ShapeError
from qkv.model import DecoderOnly, EncoderDecoder, build_model

__version__ = "0.1.0"

__all__ = [
    "ModelConfig",
    "EncoderDecoder",
    "DecoderOnly",
    "build_model",
    "QkvError",
    "ConfigError",
    "ShapeError",
    "DataError",
    "CheckpointError",
    "__version__",
]
