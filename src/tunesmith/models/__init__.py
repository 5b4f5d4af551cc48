from tunesmith.models.registry import ALIASES, resolve_model

__all__ = ["ALIASES", "resolve_model"]
