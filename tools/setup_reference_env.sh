#!/usr/bin/env bash
# A throwaway virtual environment with the reference package (chatterbox-tts 0.1.7, upstream commit 59bc590),
# used only to make test fixtures (tools/make_reference_fixtures.py) and to benchmark against. It is never a
# dependency of chatterbox-jobs, and CI never builds it.
#
#   tools/setup_reference_env.sh [VENV_DIR]        # default /tmp/chatterbox-ref-venv; about 2 minutes
set -euo pipefail
VENV=${1:-/tmp/chatterbox-ref-venv}
python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install torch==2.14.1 torchaudio==2.11.0
# The reference pins torch 2.6, gradio and more; its code runs with these instead (shared FACTS.md), so the
# reference and the two packages whose requirements would pull the pins back in go in without dependencies.
$PIP install --no-deps chatterbox-tts==0.1.7 s3tokenizer resemble-perth
$PIP install transformers==5.2.0 'numpy<2' librosa==0.11.0 diffusers==0.29.0 onnx conformer==0.3.2 einops \
    omegaconf safetensors tokenizers huggingface_hub tqdm scipy soundfile 'setuptools<81' pyyaml
# Chatterbox Multilingual's front ends (tools/make_reference_fixtures_mtl.py): the reference imports them lazily.
# dicta-onnx goes in although the reference's Dicta() lacks its model path and so never diacritizes (as measured).
$PIP install pykakasi spacy-pkuseg dicta-onnx
# Turbo's reference brings a voice clip to -27 LUFS with pyloudnorm (its tts_turbo imports it at the top).
$PIP install pyloudnorm
# pip reports the reference's unmet pins (gradio, torch 2.6, ...) above; they are not needed. Check it imports
# (from /, so that our own package, also called chatterbox, cannot shadow it):
cd / && "$VENV/bin/python" -W ignore -c "import chatterbox.tts, chatterbox.mtl_tts, chatterbox.tts_turbo, pykakasi, perth, s3tokenizer, transformers, torch; \
print('chatterbox-tts reference ready: torch', torch.__version__, 'transformers', transformers.__version__)"
echo "reference environment ready: $VENV/bin/python"
