"""A pre-flight rendezvous of all processes before `jax.distributed.initialize`.

When a peer never arrives, XLA's coordination client aborts the process with a fatal C++ check after its
timeout, which Python cannot catch or explain. So shardline first meets on its own small TCP service: process 0
listens on the coordinator's host at port+1 (bound to that address only), every other process connects and
says who it is, and process 0 answers "go" once all have joined. If they have not joined within the timeout,
every process stops with a message that says how many joined and which are missing.
"""
import socket
import time
from typing import List, Tuple

from shardline.core.errors import UserError

_GO, _ABORT = b"go\n", b"abort\n"


def _endpoint(coordinator_address: str) -> Tuple[str, int]:
  host, _, port = coordinator_address.rpartition(":")
  if not host or not port.isdigit():
    raise UserError(f"--coordinator_address={coordinator_address!r} is not HOST:PORT, e.g. 10.0.0.2:1234.")
  return host.strip("[]"), int(port) + 1


def _hint(num_processes: int) -> str:
  return (f"Is the command running on every host, with the same --coordinator_address and "
          f"--num_processes={num_processes} and a distinct --process_id (0..{num_processes - 1}) on each?")


def _serve(host: str, port: int, num_processes: int, timeout: float) -> None:
  listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
  listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    listener.bind((host, port))
  except OSError as e:
    raise UserError(f"Process 0 cannot listen on {host}:{port} for the rendezvous ({e.strerror}). The "
                    "coordinator address must be an address of this host, with that port and the next free.") from e
  listener.listen(num_processes)
  deadline = time.time() + timeout
  peers: List[Tuple[socket.socket, int]] = []
  try:
    while len(peers) < num_processes - 1 and time.time() < deadline:
      listener.settimeout(max(deadline - time.time(), 0.01))
      try:
        conn, _ = listener.accept()
      except socket.timeout:
        break
      conn.settimeout(10)
      data = conn.recv(64).decode().strip()
      if not data.isdigit() or not 0 < int(data) < num_processes or int(data) in [p for _, p in peers]:
        conn.sendall(_ABORT)
        conn.close()
        raise UserError(f"A process announced --process_id={data!r}, which is out of range or taken twice. "
                        + _hint(num_processes))
      peers.append((conn, int(data)))
    joined = 1 + len(peers)
    if joined < num_processes:
      missing = sorted(set(range(1, num_processes)) - {p for _, p in peers})
      for conn, _ in peers:
        conn.sendall(_ABORT)
      raise UserError(f"{joined} of {num_processes} processes joined within {timeout:.0f}s; missing process_id(s) "
                      f"{missing}. " + _hint(num_processes))
    for conn, _ in peers:
      conn.sendall(_GO)
  finally:
    for conn, _ in peers:
      conn.close()
    listener.close()


def _join(host: str, port: int, process_id: int, num_processes: int, timeout: float) -> None:
  deadline = time.time() + timeout
  while True:
    try:
      conn = socket.create_connection((host, port), timeout=max(deadline - time.time(), 0.01))
      break
    except OSError:
      if time.time() > deadline:
        raise UserError(f"Process {process_id} could not reach process 0 at {host}:{port} within {timeout:.0f}s. "
                        + _hint(num_processes)) from None
      time.sleep(0.2)
  with conn:
    conn.sendall(f"{process_id}\n".encode())
    conn.settimeout(max(deadline - time.time(), 0.01) + 5)
    try:
      answer = conn.recv(16)
    except socket.timeout:
      answer = b""
  if answer != _GO:
    raise UserError(f"Process {process_id} joined, but not all {num_processes} processes did within "
                    f"{timeout:.0f}s (see process 0's message). " + _hint(num_processes))


def meet(coordinator_address: str, num_processes: int, process_id: int, timeout: float) -> None:
  """Returns once all `num_processes` processes have met; raises UserError with a count otherwise."""
  if not 0 <= process_id < num_processes:
    raise UserError(f"--process_id={process_id} must be in 0..{num_processes - 1}.")
  host, port = _endpoint(coordinator_address)
  if process_id == 0:
    _serve(host, port, num_processes, timeout)
  else:
    _join(host, port, process_id, num_processes, timeout)
