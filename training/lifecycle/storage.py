"""MODEL_DIR's store: how long a run waits for it, and the exit code when it stops answering."""
DEFAULT_TIMEOUT_S = 300.0
# sysexits.h's EX_UNAVAILABLE: a service the run needs is unavailable. Different from preemption's 75 (EX_TEMPFAIL).
STORAGE_EXIT_CODE = 69
