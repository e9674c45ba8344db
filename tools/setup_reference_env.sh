#!/usr/bin/env bash
# A throwaway virtual environment with the reference package (chatterbox-tts 0.1.7), used only to make test
# fixtures and to benchmark against. It is never a dependency of chatterbox-jobs.
set -euo pipefail
VENV=${1:-/tmp/chatterbox-ref-venv}
python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install torch==2.14.1 torchaudio==2.11.0
# The reference pins torch 2.6 and gradio; its code runs with these instead (see shared FACTS.md).
$PIP install --no-deps chatterbox-tts==0.1.7 s3tokenizer resemble-perth
$PIP install transformers==5.2.0 'numpy<2' librosa==0.11.0 diffusers==0.29.0 onnx conformer==0.3.2 einops \
    omegaconf safetensors tokenizers huggingface_hub tqdm scipy soundfile 'setuptools<81' pyyaml
echo "reference environment ready: $VENV/bin/python"
