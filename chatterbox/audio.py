# TEMPORARY (being replaced by helper)
from __future__ import annotations
import io, os, subprocess, tempfile, wave
from pathlib import Path
import numpy as np
import imageio_ffmpeg
FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "ogg": "audio/ogg", "flac": "audio/flac"}
class AudioError(ValueError): pass
def to_int16(s): return (np.clip(s, -1, 1) * 32767).astype(np.int16)
def wav_bytes(samples, sample_rate):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(sample_rate); w.writeframes(to_int16(samples).tobytes())
    return buf.getvalue()
def encode(samples, sample_rate, fmt):
    if fmt not in FORMATS: raise AudioError(f"unknown format {fmt}")
    if not len(samples): raise AudioError("no samples")
    if fmt == "wav": return wav_bytes(samples, sample_rate)
    args = {"mp3": ["-f", "mp3", "-b:a", "128k"], "ogg": ["-f", "ogg", "-c:a", "libopus", "-ar", "48000", "-b:a", "64k"], "flac": ["-f", "flac"]}[fmt]
    p = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "-", *args, "-"], input=to_int16(samples).tobytes(), capture_output=True, check=True)
    return p.stdout
def decode(data):
    if isinstance(data, (str, Path)): data = Path(data).read_bytes()
    p = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", "-", "-f", "f32le", "-ac", "1", "-"], input=data, capture_output=True)
    if p.returncode: raise AudioError("not audio")
    info = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", "-"], input=data, capture_output=True).stderr.decode()
    import re
    rate = int(re.search(r"(\d+) Hz", info).group(1))
    return np.frombuffer(p.stdout, np.float32), rate
def silence(seconds, sr): return np.zeros(int(seconds * sr), np.float32)
def concat(chunks, sr, gap_seconds=0.0):
    out = []
    for i, c in enumerate(chunks):
        if i and gap_seconds: out.append(silence(gap_seconds, sr))
        out.append(c)
    return np.concatenate(out) if out else np.zeros(0, np.float32)
def is_silent(s, threshold_dbfs=-50.0): return not len(s) or 20 * np.log10(max(np.max(np.abs(s)), 1e-10)) < threshold_dbfs
def write_atomic(path, data):
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f: f.write(data); f.flush(); os.fsync(f.fileno())
    os.replace(tmp, path); return path
