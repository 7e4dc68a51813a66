"""NAPI and IRQ tuning: presets, applying and undoing settings."""
