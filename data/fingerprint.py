"""What produced a prepared split, as a dict that a later run compares with its own task.

The components name the seqio task, split, source, preprocessors and output features. Functions are described
by their source text, the values they close over, and the module-level constants and helper functions they
name, so a changed preprocessing function, seed or size is a different fingerprint.
"""
import functools
import hashlib
import inspect
import types
from typing import Any, Dict

SIMPLE = (int, float, str, bytes, bool, type(None))


def _constant(value: Any) -> bool:
  return isinstance(value, SIMPLE) or (isinstance(value, (tuple, frozenset)) and all(_constant(v) for v in value))


def describe_callable(fn: Any, depth: int = 2) -> str:
  """A stable description of a function, partial or callable object (see the module docstring)."""
  if isinstance(fn, functools.partial):
    return (f"partial({describe_callable(fn.func, depth)}, args={fn.args!r}, "
            f"keywords={sorted(fn.keywords.items())!r})")
  if not isinstance(fn, types.FunctionType):
    return f"{type(fn).__module__}.{type(fn).__qualname__}:{fn!r}"
  try:
    text = inspect.getsource(fn)
  except (OSError, TypeError):
    text = fn.__code__.co_code.hex()
  parts = [f"{fn.__module__}.{fn.__qualname__}", hashlib.sha256(text.encode()).hexdigest()[:16]]
  for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
    try:
      value = cell.cell_contents
    except ValueError:
      continue
    parts.append(f"{name}={describe_callable(value, depth - 1) if callable(value) and depth else repr(value)}")
  for name in fn.__code__.co_names:
    if name not in fn.__globals__:
      continue  # an attribute name, not a global
    value = fn.__globals__[name]
    if _constant(value):
      parts.append(f"{name}={value!r}")
    elif isinstance(value, types.FunctionType) and depth and value.__module__ == fn.__module__:
      parts.append(f"{name}:{describe_callable(value, depth - 1)}")
  return "; ".join(parts)


def _describe_source(source: Any) -> str:
  kind = type(source).__name__
  details = [f"{attr}={getattr(source, attr)!r}" for attr in ("tfds_name", "tfds_data_dir")
             if getattr(source, attr, None) is not None]
  dataset_fn = getattr(source, "_dataset_fn", None)
  if dataset_fn is not None:
    details.append(describe_callable(dataset_fn))
  return f"{kind}({', '.join(details)})"


def of_task(task: Any, split: str, record_format: int) -> Dict[str, Any]:
  """The fingerprint components of a seqio task's split."""
  return {
      "task": task.name,
      "split": split,
      "record_format": record_format,
      "source": _describe_source(task.source),
      "preprocessors": [describe_callable(p) for p in task.preprocessors],
      "output_features": {name: f"{feature.dtype.name}, rank {feature.rank}"
                          for name, feature in sorted(task.output_features.items())},
  }
