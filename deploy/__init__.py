"""Loading trained generators (checkpoints, MLflow runs and registered models) and serving them."""
