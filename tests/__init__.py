"""The test suite. Imported before conftest and before anything loads torch, so that what is set here reaches
torch's OpenMP runtime in every test process and every process the tests start."""
import os

# torch's OpenMP threads spin while they wait for work (GNU libgomp's default). With a test process per core, the
# workers they start and Chromium on the same cores, spinning threads took the cores the others needed: two
# processes of S3Gen's flow at once took 28 s each, 17.4 s with passive waiting, alone 8.4 and 8.7 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
