"""Import models trained by other codes into mlff model files (nothing from the file runs).

- :func:`mlff.io_import.mace_torch.import_mace`: mace-torch ``.model`` files (pickled
  ``ScaleShiftMACE`` / ``MACE``), read by the restricted unpickler of
  :mod:`mlff.io_import.safe_pickle`.
- :func:`mlff.io_import.torchmd_net.import_torchmd_net`: torchmd-net TensorNet checkpoints
  (Lightning ``.ckpt``), read the same way.
"""
