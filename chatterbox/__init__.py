"""chatterbox-jobs: Chatterbox text to speech as a job system."""
import os

# Intel MKL's strict reproducibility mode, read at MKL's first call: set here, before any matmul of a process that
# imports us, and inherited by the processes it starts (a user's own MKL_CBWR is kept). Measured on a 2-core EPYC
# VM: with it, fp32 matmuls give each row the same bits for any 4 to 64 rows (without it, for 2-3 rows, then
# 12-64), so a batching worker pads a lone request to 4 rows, not 12 (chatterbox.model.rowmatmul): a lone guided
# T3 request x0.80 of the speed it has on a worker planned for one (x0.38 without), Turbo's x0.88 (x0.41), batches
# as fast, S3Gen's large matmuls unchanged. Plans are keyed by the mode in effect. No effect without MKL.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
