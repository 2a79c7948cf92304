"""The op library: one OpDef class per op, registered by name.

Importing this package registers every op module.
"""

from . import conv, elementwise, grad, norm, pool, shape  # noqa: F401  (registration)
from .base import NO_CLAMP, Clamp, OpDef, all_ops, get_op

__all__ = ["NO_CLAMP", "Clamp", "OpDef", "all_ops", "get_op"]
