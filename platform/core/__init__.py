"""The ground floor of raygan (docs/architecture.md): errors and the family registry, then the
config, storage, metrics, losses, perceptual networks, tiling and the submitted-code shipper.
Nothing here imports the data pipeline, the models or the training roof above it
(``raygan.platform``'s other modules); tests/test_floors.py enforces it."""
