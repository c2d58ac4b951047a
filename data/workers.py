"""grain's worker processes, made to end with the process that started them.

grain 0.2 starts its `mp_prefetch` workers with multiprocessing's spawn context and has no parent-death
mechanism of its own: a training process killed with SIGKILL (the OOM killer, a hard preemption) leaves its
workers, and multiprocessing's resource tracker, running with parent 1, each holding hundreds of MB. Every worker
here runs a thread that checks its parent once every PARENT_POLL_S seconds and exits the worker when the parent
has gone (its parent id changes when it is re-parented). The resource tracker then sees its last client go and
exits too.

Why not prctl(PR_SET_PDEATHSIG): Linux ties that signal to the parent *thread* that started the child, and grain
starts its workers from whichever thread first reads the iterator, the prefetch thread here, which ends with its
stream. A worker would be killed when that thread ends, not when the process does.
"""
import functools
import os
import threading
import time

PARENT_POLL_S = 0.5
ORPHANED_EXIT_CODE = 70  # sysexits.h's EX_SOFTWARE: nothing to report to a parent that is gone


def _exit_if_orphaned(parent: int) -> None:
  if os.getppid() != parent:
    os._exit(ORPHANED_EXIT_CODE)  # pylint: disable=protected-access  no parent to hand anything back to


def _watch_parent(parent: int) -> None:
  while True:
    time.sleep(PARENT_POLL_S)
    _exit_if_orphaned(parent)


def end_with_parent(worker_index: int, worker_count: int, parent: int) -> None:
  """grain's `worker_init_fn` (with `parent` bound to the starting process's id): ends this worker at once if
  that process is already gone (killed while the worker started), and otherwise starts the thread that ends it
  when the process goes."""
  del worker_index, worker_count
  _exit_if_orphaned(parent)
  threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()


def grain_iterator(element_fn, first: int, last: int, workers: int):
  """grain's iterator over element_fn(first..last-1), in order, in `workers` processes that end with this one
  (0: in this process)."""
  import grain  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():  # grain reads absl flags; shardline's own flags are not absl's
    flags.FLAGS.mark_as_parsed()
  dataset = grain.MapDataset.range(first, last).map(element_fn).to_iter_dataset(
      grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
  if workers:
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2),
                                  worker_init_fn=functools.partial(end_with_parent, parent=os.getpid()))
  return iter(dataset)


