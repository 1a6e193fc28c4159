"""What a scoring run reads: probe sets (:mod:`~gscore.inputs.datasets`), models from checkpoints
(:mod:`~gscore.inputs.model_loading`, :mod:`~gscore.inputs.onnx_models`), every check of a checkpoint file
(:mod:`gscore.inputs.checkpoints`) and the activations the measures look at (:mod:`~gscore.inputs.extraction`)."""
