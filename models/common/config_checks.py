"""Validation shared by the model configurations: a bad value stops, before any compute, with one paragraph that
names every problem of the configuration at once."""
import dataclasses
from typing import Iterable, Sequence, Tuple

from shardline.core.errors import UserError
from shardline.kernels.attention import api as attention_api

DTYPES = ("float32", "bfloat16")

Check = Tuple[bool, str]  # (holds, what must hold)


def positive(config, names: Iterable[str]) -> Sequence[Check]:
  """Each named field is a positive number."""
  return [(getattr(config, name) > 0, f"{name}={getattr(config, name)} must be positive") for name in names]


def one_of(config, name: str, choices: Sequence[str]) -> Check:
  """The field is one of `choices`."""
  return getattr(config, name) in choices, f"{name}={getattr(config, name)!r} must be one of {tuple(choices)}"


def divides(config, divisor: str, dividend: str, why: str = "") -> Check:
  """Field `divisor` divides field `dividend` (a zero divisor fails here, not with a ZeroDivisionError)."""
  a, b = getattr(config, divisor), getattr(config, dividend)
  return bool(a) and b % a == 0, f"{divisor}={a} must divide {dividend}={b}" + (f" ({why})" if why else "")


def execution_choices(config) -> Sequence[Check]:
  """The dtype and, where the config has one, the attention implementation."""
  checks = [one_of(config, "dtype", DTYPES)]
  if any(f.name == "attention_impl" for f in dataclasses.fields(config)):
    checks.append(one_of(config, "attention_impl", attention_api.IMPLEMENTATIONS))
  return checks


def validate(config_name: str, checks: Iterable[Check]) -> None:
  """Raises one UserError listing every check that fails."""
  failed = [message for ok, message in checks if not ok]
  if failed:
    raise UserError(f"{config_name}: {'; '.join(failed)}. Fix it in your gin files or --gin overrides "
                    f"(e.g. --gin.{config_name}.<field>=<value>).")
