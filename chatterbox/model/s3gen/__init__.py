"""S3Gen: speech tokens -> 24 kHz waveform (flow matching to mels, then the HiFT vocoder)."""
