"""raygan: distributed training of GAN-based image restoration models on Ray.

Subpackages: ``raygan.platform`` (engine, config, storage, tracking), ``raygan.models``
(the GAN families), ``raygan.datasets`` (shards and on-the-fly degradations),
``raygan.deploy`` (loading and serving trained generators).
"""

__version__ = "0.1.0"
