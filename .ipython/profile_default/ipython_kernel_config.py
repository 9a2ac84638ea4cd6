# Kernels started by `make demo`, `make test`, `make notebooks` and `make paper` read this file: the Makefile sets
# IPYTHONDIR=<repo>/.ipython for them only (`make lab` and your own IPython keep your profile).
c = get_config()  # noqa: F821

# ipykernel's own log is not about the notebook: a warning on every start that its local TCP sockets are not
# encrypted, and now and then at shutdown (jupyter_client interrupts a kernel before stopping it) an error
# "KeyboardInterrupt caught in kernel". A cell that raises, or a kernel that dies, is still reported by papermill
# and nbval with its traceback.
c.IPKernelApp.log_level = "CRITICAL"
# No command-history file for headless runs.
c.HistoryManager.hist_file = ":memory:"
