from .multidomain_nas import MultiDomainNASTask  # noqa: F401
