"""Installer commands: flash a board, check its config, commission it on site."""
