"""archsearch: search the accuracy/FLOPs trade-off of differentiably pruned networks."""

__version__ = "0.1.0"
