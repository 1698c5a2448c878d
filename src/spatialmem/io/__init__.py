"""Exports of reconstructions."""

from spatialmem.io.ply import write_ply

__all__ = ["write_ply"]
