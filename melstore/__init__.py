"""melstore: log-scaled mel spectrogram feature stores for audio datasets.

The package is imported by Snakemake jobs before their thread pools are sized,
so this module must not import numpy or anything that loads a BLAS.
"""

from melstore.errors import AudioError, ConfigError, MelstoreError

__version__ = "0.1.0"

__all__ = ["AudioError", "ConfigError", "MelstoreError", "__version__"]
