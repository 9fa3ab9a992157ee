"""The `recommender` command: parses options, calls the library, formats output."""

from .main import main

__all__ = ["main"]
