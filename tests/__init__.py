"""The test suite. Imported before conftest and before anything loads torch, so that what is set here reaches
torch's OpenMP runtime in every test process and every process the tests start."""
import os

# torch's OpenMP threads spin while they wait for work (GNU libgomp's default). With a test process per core, the
# workers they start and Chromium on the same cores, spinning threads took the cores the others needed: two
# processes of S3Gen's flow at once took 28 s each, 17.4 s with passive waiting, alone 8.4 and 8.7 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# With several test processes (pytest-xdist), each one and whatever it starts (workers, the CLI) computes on its
# share of the cores: torch's threads and Piper's. Else every process ran a thread per core, and a tiny model's
# thousands of small operators each waited for a thread to be scheduled (a 1 s batching test took 40 s).
_processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
if _processes > 1:
    _share = str(max(1, len(os.sched_getaffinity(0)) // _processes))
    os.environ.setdefault("OMP_NUM_THREADS", _share)
    os.environ.setdefault("CHATTERBOX_THREADS", _share)
