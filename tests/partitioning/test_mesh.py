"""Meshes from gin-style arguments: shapes, -1, DCN, and clear failures."""
import jax
import pytest

from shardline.partitioning import mesh as mesh_lib
from shardline.core.errors import UserError


def test_ici_shape_and_minus_one_fill():
  mesh = mesh_lib.make_mesh(ici_fsdp=-1, ici_tensor=2)
  assert mesh.axis_names == ("data", "fsdp", "tensor", "expert")
  assert mesh_lib.axis_sizes(mesh) == {"data": 1, "fsdp": 4, "tensor": 2, "expert": 1}
  assert mesh.devices.size == jax.device_count() == 8


def test_dcn_axis_multiplies_ici():
  mesh = mesh_lib.make_mesh(ici_fsdp=4, dcn_data=2)
  assert mesh_lib.axis_sizes(mesh)["data"] == 2 and mesh_lib.axis_sizes(mesh)["fsdp"] == 4


def test_mesh_that_does_not_match_devices():
  with pytest.raises(UserError) as e:
    mesh_lib.make_mesh(ici_fsdp=4, ici_tensor=4)
  message = str(e.value)
  assert "needs 16 devices but 8 are available" in message
  assert "-1" in message  # says how to fix it


@pytest.mark.parametrize("kwargs, needle", [
    (dict(ici_fsdp=-1, ici_tensor=-1), "at most one axis"),
    (dict(ici_fsdp=-1, ici_tensor=3), "does not divide"),
    (dict(ici_fsdp=0), "must be positive"),
])
def test_bad_axis_sizes(kwargs, needle):
  with pytest.raises(UserError, match=needle):
    mesh_lib.make_mesh(**kwargs)


def test_describe():
  assert mesh_lib.describe(mesh_lib.make_mesh(ici_fsdp=4, ici_tensor=2)) == "fsdp=4 x tensor=2 (8 cpu devices)"
