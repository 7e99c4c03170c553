"""raygan: distributed training of GAN-based image restoration models on Ray.

Subpackages: ``raygan.platform`` (config, storage, engine, training, tracking, evaluation),
``raygan.models`` (the GAN families), ``raygan.datasets`` (shards and on-the-fly
degradations), ``raygan.deploy`` (serving trained generators). docs/architecture.md draws
the floors.
"""

import os as _os

__version__ = "0.1.0"

#: Environment defaults, applied once when any raygan module is first imported (before Ray
#: or MLflow are): Ray on loopback without usage reports, MLflow without telemetry. An
#: explicitly set variable always wins.
ENV_DEFAULTS = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
for _key, _value in ENV_DEFAULTS.items():
    _os.environ.setdefault(_key, _value)
