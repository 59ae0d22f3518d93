"""Borrowed array views for the compiled step loop: the same arrays without reference counting.

# NOTE: why this exists. numba passes a NamedTuple of arrays to a function that LLVM does not inline
# by value, and the callee increments and decrements the reference count of every member array
# (one atomic add each, on the array's meminfo), whether it uses them or not. The kernel's state
# tuples hold 4-29 arrays and its helpers run per step, per row and per KV block, so on the
# 12,000-request prefix-caching benchmark most of a step's time went to those atomics: a helper
# that reads two members of a 29-array tuple cost 450-700 ns a call against 100 ns with the two
# arrays passed alone (a microbenchmark on this machine). An array whose meminfo is NULL is not
# counted (numba's NRT_incref/decref return on NULL), so the loop's entry points rebind their tuples
# to views with a NULL meminfo and parent: the same data, shape and strides, owned by the caller.
# The caller (Python) holds the real arrays for the whole call, and no kernel function keeps a view
# past its return or allocates into the tuples, so the views never outlive their data.
"""

from __future__ import annotations

from typing import Any, TypeVar

from numba import config
from numba.core import cgutils, types
from numba.extending import intrinsic

T = TypeVar("T")


def _borrowed_array(context: Any, builder: Any, ty: types.Array, value: Any) -> Any:
    src = context.make_array(ty)(context, builder, value=value)
    out = context.make_array(ty)(context, builder)
    out.meminfo = cgutils.get_null_value(out.meminfo.type)
    out.parent = cgutils.get_null_value(out.parent.type)
    out.nitems = src.nitems
    out.itemsize = src.itemsize
    out.data = src.data
    out.shape = src.shape
    out.strides = src.strides
    return out._getvalue()


@intrinsic
def _borrowed(typingctx: Any, tup: Any) -> Any:
    if not isinstance(tup, types.BaseTuple):
        return None

    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        val = args[0]
        for i, ty in enumerate(tup.types):
            if isinstance(ty, types.Array):
                member = builder.extract_value(val, i)
                val = builder.insert_value(val, _borrowed_array(context, builder, ty, member), i)
            else:
                context.nrt.incref(builder, ty, builder.extract_value(val, i))
        return val

    return tup(tup), codegen


def _identity(tup: T) -> T:
    return tup


borrowed = _identity if config.DISABLE_JIT else _borrowed
"""`borrowed(t)` inside compiled code: tuple `t` with every array member replaced by an uncounted view
(under NUMBA_DISABLE_JIT=1, `t` itself)."""
