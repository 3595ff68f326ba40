"""Admin commands: `ourmail …` and `python -m ourmail …`."""
