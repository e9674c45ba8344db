"""Audiobooks: reading txt/Markdown/EPUB, planning chapters and chunks, assembling chapter files and the M4B."""
