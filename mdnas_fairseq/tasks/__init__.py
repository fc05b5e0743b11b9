from .multidomain_nas import MultiDomainNASTask  # noqa: F401
from .multidomain_nas_translation import MultiDomainNASTranslationTask  # noqa: F401
from .rotated_mnist_nas import RotatedMNISTNASTask  # noqa: F401
