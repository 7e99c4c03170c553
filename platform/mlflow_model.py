"""MLflow "model from code" for raygan generators (no pickled Python objects).

Artifacts: ``weights`` (safetensors) and ``config`` (the run config as JSON). ``predict``
takes float32 images (N, H, W, C) in [0, 1] (the logged signature; any H and W) and
returns the restored float32 images (larger by the SR scale for super-resolution).
"""

import mlflow
from mlflow.pyfunc import PythonModel


class RayganGenerator(PythonModel):
    def load_context(self, context):
        from raygan.platform.restorer import generator_from_files

        self.model, self.config = generator_from_files(context.artifacts["config"],
                                                       context.artifacts["weights"])

    def predict(self, context, model_input, params=None):
        from raygan.platform.restorer import restore_array

        return restore_array(self.model, model_input)


mlflow.models.set_model(RayganGenerator())
