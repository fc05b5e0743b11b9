from .multidomain_nas_loss import MultiDomainNASLoss, MultiDomainNASLossConfig  # noqa: F401
