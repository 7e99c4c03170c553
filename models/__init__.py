"""The GAN families; importing this package registers every family module below."""

from raygan.models import wcdgan  # noqa: F401
from raygan.models import facesr  # noqa: F401
from raygan.models import pan  # noqa: F401
from raygan.models import dagan  # noqa: F401
from raygan.models import dequantizer  # noqa: F401
from raygan.models import baselines  # noqa: F401
