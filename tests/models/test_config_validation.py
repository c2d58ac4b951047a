"""Every model configuration refuses a bad value with one UserError paragraph (exit 2 on the command line), never
a ValueError or ZeroDivisionError from deep inside the model."""
import pytest

from shardline.core.errors import UserError
from shardline.models.limoe.config import LIMoEConfig
from shardline.models.metnet2.config import MetNet2Config
from shardline.models.mgdt.config import MGDTConfig
from tests import helpers

CASES = [
    (helpers.tiny_vit, {"num_heads": 3}, "num_heads=3 must divide width=64 (the MAP head"),
    (helpers.tiny_vit, {"dtype": "float16"}, "dtype='float16' must be one of ('float32', 'bfloat16')"),
    (helpers.tiny_vit, {"attention_impl": "flash"}, "attention_impl='flash' must be one of"),
    (helpers.tiny_vit, {"patch_size": 0}, "patch_size=0 must be positive"),
    (LIMoEConfig, {"width": 0}, "width=0 must be positive"),
    (LIMoEConfig, {"grouped_impl": "triton"}, "grouped_impl='triton' must be one of ('xla', 'pallas', 'ragged', 'auto')"),
    (LIMoEConfig, {"dtype": "x"}, "dtype='x' must be one of"),
    (MGDTConfig, {"attention_impl": "x"}, "attention_impl='x' must be one of"),
    (MGDTConfig, {"return_max": -30}, "return_max=-30 must exceed return_min=-20"),
    (MetNet2Config, {"num_bins": 0}, "num_bins=0 must be positive"),
    (MetNet2Config, {"dtype": "x", "downsample": 3}, "dtype='x' must be one of ('float32', 'bfloat16'); downsample=3 "
                                                     "must divide context=64"),
]


@pytest.mark.parametrize("make, values, message", CASES, ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_a_bad_value_is_a_user_error_that_names_it(make, values, message):
  with pytest.raises(UserError) as e:
    make(**values)
  assert message in str(e.value)
  assert "Fix it in your gin files or --gin overrides" in str(e.value)
