"""Typed configuration and paths."""

from bastion.config.loader import dump, get_key, load, save, set_key, validate
from bastion.config.model import Config

__all__ = ["Config", "dump", "get_key", "load", "save", "set_key", "validate"]
