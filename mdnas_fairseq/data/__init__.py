from .multidomain_dataset import MultiDomainDataset, draw_domain_batches

__all__ = ["MultiDomainDataset", "draw_domain_batches"]
