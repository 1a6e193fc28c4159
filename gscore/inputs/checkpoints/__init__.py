"""Every check of a checkpoint file, in one place ("why was my upload refused?"):

- :mod:`~gscore.inputs.checkpoints.format`: what a file is (safetensors, torch.save zip, ONNX) and the pickle globals it
  names, read without loading it;
- :mod:`~gscore.inputs.checkpoints.upload_checks`: the checks the API runs at submission (no torch);
- :mod:`~gscore.inputs.checkpoints.preflight`: a state_dict's keys and shapes against the architecture, no weights loaded;
- :mod:`~gscore.inputs.checkpoints.loading`: the safe load itself (safetensors or ``weights_only`` torch.load).
"""
